"""What every browser test uses: Chromium, a page per person, and the few moves and
checks a person makes (send, wait for the reply, look at what is stored).

Each browser context is one person's browser (its own cookie). Screenshots of the pages
are saved under test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import time
import weakref

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from tests.servers import ROOT, RUNNING, start_app, stop_app

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("POOLCHAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on the offline model, one per test file (a file may define its own)."""
    server = start_app(tmp_path_factory.mktemp("browser-data"), OFFLINE_STREAM_DELAY="0.15")
    yield server
    stop_app(server)


@pytest.fixture(scope="module")
def unsynced_server(tmp_path_factory):
    """Idle tabs do not catch up on their own: a tab stays as stale as its page."""
    server = start_app(tmp_path_factory.mktemp("browser-unsynced"),
                       OFFLINE_STREAM_DELAY="0.15", TAB_SYNC_SECONDS="0")
    yield server
    stop_app(server)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):
    """Open pages, each in a browser context of its own (a separate person)."""
    contexts = []

    def open_page(url: str) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        watch_connection(page)
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text[:200]))
        page.goto(url)
        try:
            expect(page.get_by_test_id("stChatInputTextArea")).to_be_visible(
                timeout=WAIT_MS)
        except AssertionError as failure:  # twice in CI under load: say where it stood
            shot(page, "first-page-not-drawn")
            raise AssertionError(f"{failure}\n{page_state(page)}; the page says "
                                 f"{page.inner_text('body')[:300]!r}; console errors "
                                 f"{errors[-5:]}; {server_log_end(url)}") from failure
        return page

    yield open_page
    for context in contexts:
        context.close()


def server_log_end(url: str, lines: int = 15) -> str:
    """The end of the log of the test server at ``url`` (if the tests started it)."""
    server = next((s for address, s in RUNNING.items() if url.startswith(address)), None)
    if server is None:
        return "no log of its server"
    return "its server's log ends with:\n" + "\n".join(server.log().splitlines()[-lines:])


_socket_closes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def watch_connection(page: Page) -> None:
    """Note when the page's connection to the server closes (for ``page_state``)."""
    closes = _socket_closes.setdefault(page, [])
    page.on("websocket", lambda socket: socket.on(
        "close", lambda _: closes.append(time.strftime("%H:%M:%S"))))


def page_state(page: Page) -> str:
    """For a failure's message: where the page's run and connection stood, and when
    its connection closed (a navigation closes one too)."""
    app = page.get_by_test_id("stApp")
    return (f"run {app.get_attribute('data-test-script-state')}, connection "
            f"{app.get_attribute('data-test-connection-state')}, connections closed at "
            f"{_socket_closes.get(page, [])}, now {time.strftime('%H:%M:%S')}")


def send(page: Page, text: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    expect(box).to_be_enabled(timeout=WAIT_MS)
    box.fill(text)
    box.press("Enter")


def address(page: Page) -> str:
    """The page's address as the page has it now (``page.url`` follows Streamlit's
    rewrites of it a moment later)."""
    return page.evaluate("location.href")


def moved_from(page: Page, old: str) -> None:
    """Wait until the page's address is another than ``old``."""
    page.wait_for_function("old => location.href !== old", arg=old, timeout=WAIT_MS)


def messages(page: Page):
    return page.get_by_test_id("stChatMessage")


def wait_for_reply(page: Page, index: int, text: str) -> None:
    expect(messages(page).nth(index)).to_contain_text(text, timeout=WAIT_MS)
    wait_until_idle(page)


IDLE_PLACEHOLDER = "Message PoolChat"


def wait_until_idle(page: Page) -> None:
    """Until the page was drawn with no reply being written in its chat: the chat box
    says so (it stays open while a reply is written, for a draft)."""
    box = page.get_by_test_id("stChatInputTextArea")
    expect(box).to_have_attribute("placeholder", IDLE_PLACEHOLDER, timeout=WAIT_MS)
    expect(box).to_be_enabled(timeout=WAIT_MS)


def wait_until_drawn(page: Page) -> None:
    """Until the page's run has ended (Streamlit marks it on the app's root): a popover
    opened on an element the run is still drawing can be left off screen."""
    expect(page.get_by_test_id("stApp")).to_have_attribute(
        "data-test-script-state", "notRunning", timeout=WAIT_MS)


def stored_messages(server, page: Page) -> list[dict]:
    """What the database holds for the chat open in ``page``."""
    import sqlite3
    from urllib.parse import parse_qs, urlparse

    session_id = parse_qs(urlparse(address(page)).query)["session"][0]
    with sqlite3.connect(server.database) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(
            "SELECT role, content, status FROM messages WHERE session_id = ? ORDER BY id",
            (session_id,))]


def expect_only_the_question_and_its_live_reply(page: Page) -> None:
    """A reply being written, with nothing of the page drawn before it left in sight: two
    bubbles, no buttons of another message inside the live one, no Regenerate."""
    expect(page.get_by_role("button", name="Stop")).to_be_visible(timeout=WAIT_MS)
    expect(messages(page)).to_have_count(2, timeout=5000)
    expect(messages(page).nth(1).get_by_test_id("stPopover").filter(visible=True)
           ).to_have_count(0, timeout=5000)
    expect(page.get_by_role("button", name="Regenerate")).to_have_count(0, timeout=5000)


def open_expander(scope: Locator, title: str) -> None:
    """Click an expander open and wait out its 500 ms opening animation: a click inside
    it before then can land where the animation has just moved the button from (a lost
    "Use these settings", an "Export JSON" that downloaded nothing). A person is slower."""
    scope.get_by_text(title, exact=True).click()
    expander = scope.get_by_test_id("stExpander").filter(has_text=title)
    scope.page.wait_for_function(
        "e => e.getAnimations({subtree: true}).length === 0",
        arg=expander.element_handle(), timeout=WAIT_MS)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, animations="disabled")


def answered_chat_in_two_tabs(server, new_page) -> tuple[Page, Page]:
    """A chat with one answered question, open in a second tab of the same browser too."""
    page = new_page(server.url)
    send(page, "what is 2+2")
    wait_for_reply(page, 1, "2+2 = 4")
    page.wait_for_url("**session=*")
    second = page.context.new_page()  # the same chat open in another tab, idle
    second.goto(address(page))
    expect(messages(second)).to_have_count(2, timeout=WAIT_MS)
    return page, second


def wait_until(condition, seconds: float = WAIT_MS / 1000) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def send_new_version(page: Page, index: int, text: str) -> None:
    """Edit message ``index`` as a person does: its edit button, the new text, "Send the
    new version"."""
    messages(page).nth(index).get_by_role("button", name="edit").click()
    editor = page.get_by_test_id("stPopoverBody")
    editor.get_by_label("Edit your message").fill(text)
    editor.get_by_role("button", name="Send the new version").click()
