"""End to end in a real headless Chromium against `streamlit run app.py`: a reply
survives whatever the browser does (reloads, tabs, a click or a stop at once). Tabs that
disagree, restarts and other replicas are in test_browser_tabs_and_restarts.py (a file
per worker), the chat's own UX in test_browser_ux.py; the helpers in tests/browser.py.
"""

from __future__ import annotations

import json
import re
import sqlite3
from urllib.parse import parse_qs, urlparse
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser import (
    IDLE_PLACEHOLDER, WAIT_MS, address, answered_chat_in_two_tabs, messages, moved_from,
    open_expander, send, shot, stored_messages, wait_for_reply, wait_until,
    wait_until_drawn, wait_until_idle,
)


def test_arithmetic_is_answered_through_a_visible_tool_step(server, new_page):
    page = new_page(server.url)
    expect(page.get_by_text("Offline demo mode")).to_be_visible()
    send(page, "what is 12*7?")
    wait_for_reply(page, 1, "12*7 = 84")
    expect(messages(page).nth(1)).to_contain_text("calculator")
    messages(page).nth(1).get_by_text("calculator").click()
    expect(messages(page).nth(1).get_by_test_id("stCode")).to_be_visible()
    expect(messages(page).nth(1).get_by_test_id("stCode")).to_contain_text("84")
    shot(page, "chat")
    open_expander(page.get_by_test_id("stSidebar"), "This conversation")
    export = page.get_by_role("button", name="Export JSON")
    with page.expect_download(timeout=WAIT_MS) as download:
        export.click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["messages"][1]["tool_calls"] == [
        {"name": "calculator", "args": {"expression": "12*7"}}]


def test_two_browsers_keep_separate_histories_and_a_reload_keeps_the_chat(server,
                                                                          new_page):
    people = {name: new_page(server.url) for name in ("Ada", "Grace")}
    for name, page in people.items():
        send(page, f"My name is {name}.")
    for name, page in people.items():
        wait_for_reply(page, 1, f"Nice to meet you, {name}")
    for name, page in people.items():
        page.wait_for_url("**session=*")
        page.reload()
        expect(messages(page)).to_have_count(2, timeout=WAIT_MS)
        send(page, "What is my name?")
        wait_for_reply(page, 3, f"Your name is {name}.")
        other = "Grace" if name == "Ada" else "Ada"
        expect(page.locator("main")).not_to_contain_text(other)
        expect(page.get_by_test_id("stSidebar")).not_to_contain_text(other)


def test_a_link_to_another_browsers_chat_opens_a_fresh_chat(server, new_page):
    owner = new_page(server.url)
    send(owner, "My name is Private Person.")
    wait_for_reply(owner, 1, "Nice to meet you")
    stranger = new_page(address(owner))
    expect(stranger.get_by_text("unknown here")).to_be_visible(timeout=WAIT_MS)
    expect(messages(stranger)).to_have_count(0)
    assert address(stranger) != address(owner)
    expect(stranger.locator("body")).not_to_contain_text("Private Person")


def test_the_sidebar_lists_this_browsers_conversations_across_reloads(server, new_page):
    page = new_page(server.url)
    send(page, "what is 1+1")
    wait_for_reply(page, 1, "1+1 = 2")
    page.get_by_role("button", name="New chat").click()
    expect(messages(page)).to_have_count(0, timeout=WAIT_MS)
    send(page, "what is 2+2")
    wait_for_reply(page, 1, "2+2 = 4")
    page.reload()
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_role("button", name="what is 1+1")).to_be_visible(timeout=WAIT_MS)
    sidebar.get_by_role("button", name="what is 1+1").click()
    wait_for_reply(page, 1, "1+1 = 2")
    shot(page, "conversations")


def test_a_stop_clicked_as_the_tab_closes_still_stops_the_reply(server, new_page):
    """The click's own message to the server dies with a page closed right after it;
    the page also sends it as a keepalive request, which the browser sends anyway. (A reload right
    after the click is the same case; as a test, its context's close hung once in CI.)"""
    page = new_page(server.url)
    send(page, "Tell me about yourself")
    expect(messages(page).nth(1)).to_contain_text("offline", timeout=WAIT_MS)
    stored_messages(server, page)  # the chat's id is in the address by now
    chat = parse_qs(urlparse(address(page)).query)["session"][0]
    page.get_by_role("button", name="Stop").evaluate("button => button.click()")
    page.close()
    with sqlite3.connect(server.database) as db:
        def status():
            return db.execute("SELECT status FROM messages WHERE session_id = ? AND role ="
                              " 'ai' ORDER BY id DESC LIMIT 1", (chat,)).fetchone()[0]
        wait_until(lambda: status() != "running")
        assert status() == "stopped"




def test_stop_keeps_exactly_what_was_shown_marked_stopped(server, new_page):
    page = new_page(server.url)
    send(page, "Tell me about yourself")
    expect(messages(page).nth(1)).to_contain_text("offline", timeout=WAIT_MS)
    page.get_by_role("button", name="Stop").click()
    reply = messages(page).nth(1)
    expect(reply).to_contain_text("Stopped by you", timeout=WAIT_MS)  # no reload needed
    expect(page.get_by_role("button", name="Regenerate")).to_be_visible()
    shown = reply.get_by_test_id("stMarkdown").first.inner_text()
    stored = stored_messages(server, page)
    assert stored[-1]["status"] == "stopped"
    assert stored[-1]["content"].split() == shown.split()  # what the user saw, stored
    assert "and restart." not in shown
    send(page, "what is 2+2")  # the next message starts at once
    wait_for_reply(page, 3, "2+2 = 4")
    page.reload()
    expect(messages(page).nth(1)).to_contain_text("Stopped by you", timeout=WAIT_MS)
    shot(page, "stopped")


def test_the_stats_page_and_json_show_aggregates_only(server, new_page):
    page = new_page(server.url)
    send(page, "My name is Swordfish.")
    wait_for_reply(page, 1, "Nice to meet you, Swordfish")
    stats = server.get_json("/api/stats.json")
    assert stats["total_sessions"] >= 1 and stats["agent_pool_size"] == 1
    assert "Swordfish" not in str(stats)
    page.goto(f"{server.url}/stats")
    metric = page.get_by_test_id("stMetric").filter(has_text="Sessions").first
    expect(metric).to_contain_text(str(stats["total_sessions"]), timeout=WAIT_MS)
    expect(page.locator("main")).not_to_contain_text("Swordfish")
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(7, timeout=WAIT_MS)
    page.set_viewport_size({"width": 1280, "height": 2000})
    shot(page, "stats")


def test_a_cache_clear_from_any_client_loses_no_chat_and_no_stats(server, new_page):
    people = {name: new_page(server.url) for name in ("Lin", "Max")}
    for name, page in people.items():
        send(page, f"My name is {name}.")
        wait_for_reply(page, 1, f"Nice to meet you, {name}")
    before = server.get_json("/api/stats.json")
    attached = server.log().count("attached to Streamlit's resource cache")

    send_clear_cache(server.url)

    for name, page in people.items():
        send(page, "What is my name?")
        wait_for_reply(page, 3, f"Your name is {name}.")
    assert server.log().count("attached to Streamlit's resource cache") > attached
    after = server.get_json("/api/stats.json")
    # The raw client ran the chat page once too: a page view, not a conversation.
    assert after["total_sessions"] == before["total_sessions"]
    assert after["page_views"] == before["page_views"] + 1
    assert after["total_messages"] == before["total_messages"] + 4
    assert sum(a["served"] for a in after["pool"]) == sum(
        a["served"] for a in before["pool"]) + 2


def send_clear_cache(url: str) -> None:
    """What any websocket client may send: Streamlit's `clear_cache` back message."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + "/_stcore/stream",
                 subprotocols=["streamlit"]) as socket:
        clear = BackMsg()
        clear.clear_cache = True
        socket.send(clear.SerializeToString())
        rerun = BackMsg()  # handled after the clear, in order: its run is our receipt
        rerun.rerun_script.query_string = ""
        socket.send(rerun.SerializeToString())
        while True:  # let the run finish, so this client's own session is counted
            reply = ForwardMsg()
            reply.ParseFromString(socket.recv(timeout=20))
            if reply.WhichOneof("type") == "script_finished":
                return


# -- a reply survives whatever the browser does --------------------------------------
def reply_text(page: Page, index: int) -> str:
    return messages(page).nth(index).inner_text()


def test_a_reload_mid_reply_shows_it_so_far_and_keeps_streaming(server, new_page):
    page = new_page(server.url)
    send(page, "Tell me about yourself")
    expect(messages(page).nth(1)).to_contain_text("offline demo", timeout=WAIT_MS)
    expect(page.get_by_test_id("stChatInputTextArea")).to_have_attribute(
        "placeholder", re.compile("A reply is being written"))  # it says why it waits
    page.wait_for_url("**session=*")
    page.reload()
    expect(messages(page).nth(1)).to_contain_text("offline demo", timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(messages(page).nth(0)).not_to_contain_text("No reply")  # it is coming
    shot(page, "reloaded-mid-reply")
    wait_for_reply(page, 1, "and restart.")
    expect(page.get_by_role("button", name="Regenerate")).to_be_visible(timeout=WAIT_MS)
    stored = stored_messages(server, page)
    assert [(m["role"], m["status"]) for m in stored] == [("human", "complete"),
                                                          ("ai", "complete")]
    assert stored[1]["content"].endswith("and restart.")


def test_a_second_tab_follows_the_reply_live(server, new_page):
    page = new_page(server.url)
    send(page, "Tell me about yourself")
    expect(messages(page).nth(1)).to_contain_text("offline demo", timeout=WAIT_MS)
    page.wait_for_url("**session=*")
    second = page.context.new_page()  # same browser, same cookie
    second.goto(address(page))
    expect(messages(second).nth(1)).to_contain_text("offline demo", timeout=WAIT_MS)
    box = second.get_by_test_id("stChatInputTextArea")
    assert "A reply is being written" in box.get_attribute("placeholder")  # says so
    wait_for_reply(second, 1, "and restart.")
    assert box.get_attribute("placeholder") == IDLE_PLACEHOLDER
    wait_for_reply(page, 1, "and restart.")
    assert len(stored_messages(server, page)) == 2




def test_an_idle_tab_follows_a_reply_started_in_another_tab_and_keeps_its_draft(
        server, new_page):
    page, second = answered_chat_in_two_tabs(server, new_page)
    box = second.get_by_test_id("stChatInputTextArea")
    box.fill("a draft not sent yet")
    send(page, "Tell me about yourself")
    # nothing is done in the second tab: it sees the reply start and follows it live
    expect(messages(second).nth(3)).to_contain_text("offline demo", timeout=WAIT_MS)
    expect(second.get_by_role("button", name="Stop")).to_be_visible()
    box.press_sequentially(", typed on")  # the draft goes on while the reply is written
    expect(second.get_by_role("button", name="Stop")).to_be_visible()  # it still was
    shot(second, "idle-tab-follows-a-reply")
    wait_for_reply(second, 3, "and restart.")
    expect(box).to_have_value("a draft not sent yet, typed on")  # nothing typed is lost
    expect(messages(second)).to_have_count(4)
    shot(second, "idle-tab-after-the-reply")


def test_enter_right_after_stop_sends_the_draft_typed_meanwhile(server, new_page):
    """Stop, then Enter at once, before the page is drawn again without the reply: the
    draft goes and is answered, the stopped reply stays. (The page held that Enter as if
    the reply still ran: the draft sat in the box, unsent, seen in a full suite's run.)"""
    page = new_page(server.url)
    send(page, "Tell me about yourself")
    expect(messages(page).nth(1)).to_contain_text("offline demo", timeout=WAIT_MS)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("what is 2+3")
    page.evaluate("""() => {  // in one go: the page cannot be drawn again in between
        document.querySelector('[class*="st-key-stop-"] button').click();
        document.querySelector('[data-testid="stChatInputTextArea"]').dispatchEvent(
            new KeyboardEvent("keydown", {key: "Enter", code: "Enter", keyCode: 13,
                                          bubbles: true, cancelable: true}));
    }""")
    wait_for_reply(page, 3, "2+3 = 5")
    expect(messages(page).nth(1)).to_contain_text("Stopped by you")
    stored = stored_messages(server, page)
    assert [m["content"] for m in stored if m["role"] == "human"] == [
        "Tell me about yourself", "what is 2+3"]  # once each
    assert stored[1]["status"] == "stopped"
    assert (stored[-1]["content"], stored[-1]["status"]) == ("2+3 = 5", "complete")


def test_a_draft_typed_while_the_reply_streams_is_kept_and_sent_after_it(
        server, new_page):
    """Like the best chat apps: the next message can be typed while a reply streams, and
    Enter or the (dimmed) send arrow does nothing there, so typing goes on with nothing
    lost; once the reply ends, Enter sends it. (Sent to the server, it came back
    refused, but the letters typed meanwhile were lost: 6 of 6 in a walk.)"""
    page = new_page(server.url)
    send(page, "Tell me about yourself")
    expect(messages(page).nth(1)).to_contain_text("offline demo", timeout=WAIT_MS)
    box = page.get_by_test_id("stChatInputTextArea")
    arrow = page.get_by_test_id("stChatInputSubmitButton")
    box.press_sequentially("what is 6")
    box.press("Enter")  # too early: held in the page, which says so
    held = page.get_by_role("status").filter(has_text="your message waits here")
    expect(held).to_be_visible()
    box.press_sequentially("*7")  # typed on at once
    expect(arrow).to_have_css("opacity", "0.3")
    arrow.click()  # held too
    expect(box).to_have_value("what is 6*7")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()  # still streaming
    shot(page, "draft-typed-while-a-reply-streams")
    wait_for_reply(page, 1, "and restart.")
    expect(box).to_have_value("what is 6*7")
    expect(arrow).to_have_css("opacity", "1")
    expect(held).to_be_hidden()  # sendable now
    box.press("Enter")
    wait_for_reply(page, 3, "6*7 = 42")
    stored = stored_messages(server, page)
    assert [m["content"] for m in stored if m["role"] == "human"] == [
        "Tell me about yourself", "what is 6*7"]  # once each
    assert stored[-1]["content"] == "6*7 = 42"


def test_letters_typed_right_after_a_send_are_kept(server, new_page):
    """The box stays open right after a send: typing on loses nothing (Streamlit's
    "disable" lost the first 0.3 s: 5 to 8 letters a send, in a probe)."""
    page = new_page(server.url)
    box = page.get_by_test_id("stChatInputTextArea")
    send(page, "what is 6*7")
    page.keyboard.type("thanks", delay=15)  # at once, as a quick typist goes on
    wait_for_reply(page, 1, "6*7 = 42")
    expect(box).to_have_value("thanks")  # every letter
    page.keyboard.type(", and another", delay=15)
    send(page, box.input_value())
    wait_for_reply(page, 3, "offline demo")
    stored = stored_messages(server, page)
    assert [m["content"] for m in stored if m["role"] == "human"] == [
        "what is 6*7", "thanks, and another"]  # each once, in order
    expect(box).to_have_value("")


def test_an_example_clicked_right_after_enter_does_not_replace_the_message(server,
                                                                          new_page):
    """Enter, and at once a click on an example of the still empty chat: the message is
    sent, the example is not (the example took the message's place, 2 times in 2 in a
    probe, and 5 in 6 in a walk)."""
    page = new_page(server.url)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("what is 6*7")
    example = page.get_by_role("button", name="What time is it?").element_handle()
    page.evaluate("""button => document.addEventListener("keydown", (event) => {
        if (event.key !== "Enter") return;  // the box has sent its message: click at once
        window.exampleShown = button.isConnected;
        button.click();
    }, {once: true})""", example)  # (a click from here came after a redraw under load)
    box.press("Enter")
    assert page.evaluate("window.exampleShown")  # clicked while shown
    wait_for_reply(page, 1, "6*7 = 42")
    wait_until_idle(page)
    expect(messages(page)).to_have_count(2)
    stored = stored_messages(server, page)
    assert [m["content"] for m in stored if m["role"] == "human"] == ["what is 6*7"]
    expect(box).to_have_value("")  # and the example is not put in the box either


def test_stats_clicked_right_after_enter_opens_stats_and_the_message_is_sent(server,
                                                                            new_page):
    """Enter, and at once "Stats": Stats opens and stays (5 times in 10 the page went
    back to the chat), and the message is stored and answered in its chat."""
    page = new_page(server.url)
    send(page, "what is 6*7")
    wait_for_reply(page, 1, "6*7 = 42")
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("My name is Ada")
    stats = page.get_by_test_id("stSidebarNav").get_by_role("link", name="Stats")
    link = stats.element_handle()
    chat = stored_messages(server, page)
    box.press("Enter")
    link.evaluate("link => link.click()")
    expect(page.get_by_text("PoolChat stats")).to_be_visible(timeout=WAIT_MS)
    wait_until_drawn(page)
    expect(page).to_have_url(re.compile(r"/stats"))
    expect(box).to_have_count(0)  # still on Stats once every run has ended
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Chat").click()
    wait_for_reply(page, 3, "Nice to meet you, Ada")
    page.wait_for_url("**session=*")  # the address names the chat a moment after it shows
    stored = stored_messages(server, page)
    assert stored[:len(chat)] == chat  # the same chat, reopened
    assert [m["content"] for m in stored if m["role"] == "human"] == [
        "what is 6*7", "My name is Ada"]


def test_text_typed_right_after_new_chat_mid_reply_is_kept_for_the_new_chat(server,
                                                                           new_page):
    """A reply streams; "New chat", and the next message typed at once, before the new
    chat is drawn: it stays in the box, for the new chat, and is sent there. (It was put
    aside as the first chat's draft, and vanished: 5 times in 6 in a walk.)"""
    page = new_page(server.url)
    send(page, "Tell me about yourself")
    expect(messages(page).nth(1)).to_contain_text("offline demo", timeout=WAIT_MS)
    first = address(page)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("a draft for the first chat")
    page.get_by_test_id("stSidebar").get_by_role("button", name="New chat").evaluate(
        "button => button.click()")
    box.fill("what is 5*8")  # before the new chat is drawn
    moved_from(page, first)
    wait_until_idle(page)  # the new chat, drawn
    expect(box).to_have_value("what is 5*8")
    shot(page, "typed-right-after-new-chat")
    box.press("Enter")
    wait_for_reply(page, 1, "5*8 = 40")
    assert [m["content"] for m in stored_messages(server, page)
            if m["role"] == "human"] == ["what is 5*8"]
    page.goto(first)
    expect(box).to_have_value("a draft for the first chat", timeout=WAIT_MS)
    wait_for_reply(page, 1, "and restart.")
    assert [m["content"] for m in stored_messages(server, page)
            if m["role"] == "human"] == ["Tell me about yourself"]


def test_a_regenerate_in_one_tab_is_followed_and_can_be_stopped_from_the_other(
        server, new_page):
    page, second = answered_chat_in_two_tabs(server, new_page)
    send(page, "Tell me about yourself")
    wait_for_reply(page, 3, "and restart.")
    expect(messages(second)).to_have_count(4, timeout=WAIT_MS)  # it caught up, idle
    page.get_by_role("button", name="Regenerate").click()
    expect(second.get_by_role("button", name="Stop")).to_be_visible(timeout=WAIT_MS)
    expect(messages(second).nth(3)).to_contain_text("offline demo", timeout=WAIT_MS)
    second.get_by_role("button", name="Stop").click()  # stopped from the tab that follows
    for tab in (page, second):
        expect(messages(tab).nth(3)).to_contain_text("Stopped by you", timeout=WAIT_MS)
        expect(messages(tab)).to_have_count(4)  # one answer, the stopped one
    shot(page, "regenerate-stopped-from-the-other-tab")
    stored = stored_messages(server, page)
    assert [(m["role"], m["status"]) for m in stored if m["role"] != "tool"
            and m["content"]] == [("human", "complete"), ("ai", "complete"),
                                  ("human", "complete"), ("ai", "stopped")]
    assert "and restart." not in stored[-1]["content"]


def test_a_new_chat_in_one_tab_is_listed_in_the_others(server, new_page):
    page, second = answered_chat_in_two_tabs(server, new_page)
    first_chat = address(page)
    page.get_by_role("button", name="New chat").click()
    # once the click's run has drawn the new chat (a message sent within milliseconds of
    # the click is the AppTest's case: test_app, ...before_the_url_caught_up...)
    moved_from(page, first_chat)
    expect(messages(page)).to_have_count(0, timeout=WAIT_MS)
    send(page, "what is 9*9")
    wait_for_reply(page, 1, "9*9 = 81")
    expect(messages(page)).to_have_count(2)
    assert address(page) != first_chat
    expect(second.get_by_test_id("stSidebar").get_by_role(
        "button", name="what is 9*9")).to_be_visible(timeout=WAIT_MS)
    expect(messages(second)).to_have_count(2)  # still its own chat, 2+2
    assert [m["content"] for m in stored_messages(server, second)
            if m["role"] == "human"] == ["what is 2+2"]


def test_back_and_forward_move_between_chats(server, new_page):
    page = new_page(server.url)
    send(page, "what is 3+3")
    wait_for_reply(page, 1, "3+3 = 6")
    first_chat = address(page)
    page.get_by_role("button", name="New chat").click()
    moved_from(page, first_chat)
    expect(messages(page)).to_have_count(0, timeout=WAIT_MS)
    new_chat = address(page)
    page.go_back()
    expect(messages(page).nth(1)).to_contain_text("3+3 = 6", timeout=WAIT_MS)
    assert address(page) == first_chat
    page.go_forward()
    expect(messages(page)).to_have_count(0, timeout=WAIT_MS)
    assert address(page) == new_chat


def test_back_on_the_chat_page_from_stats_the_chat_stays_and_a_reload_keeps_it(
        server, new_page):
    page = new_page(server.url)
    send(page, "what is 7+7")
    wait_for_reply(page, 1, "7+7 = 14")
    chat = parse_qs(urlparse(address(page)).query)["session"]
    nav = page.get_by_test_id("stSidebarNav")
    nav.get_by_role("link", name="Stats").click()
    page.wait_for_url("**/stats")
    nav.get_by_role("link", name="Chat").click()
    expect(messages(page)).to_have_count(2, timeout=WAIT_MS)  # not a new, empty chat
    page.wait_for_url(lambda url: "session=" in url and "/stats" not in url,
                      timeout=WAIT_MS)
    assert parse_qs(urlparse(address(page)).query)["session"] == chat
    page.reload()
    expect(messages(page).nth(1)).to_contain_text("7+7 = 14", timeout=WAIT_MS)
