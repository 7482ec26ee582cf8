"""End to end in a real headless Chromium against `streamlit run app.py`.

Each test saves a screenshot under test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("POOLCHAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
REPLY_TIMEOUT_MS = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # polling a server that is still starting
    raise TimeoutError("streamlit did not become healthy")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free loopback port with a fresh SQLite database."""
    data = tmp_path_factory.mktemp("browser-data")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(DATABASE_URL=f"sqlite:///{data}/poolchat.db", PYTHONUNBUFFERED="1")
    log = (data / "streamlit.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def send(page: Page, text: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")


def messages(page: Page):
    return page.get_by_test_id("stChatMessage")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_arithmetic_is_answered_through_a_visible_tool_step(server, page):
    page.goto(server)
    expect(page.get_by_text("Offline demo mode")).to_be_visible(timeout=REPLY_TIMEOUT_MS)
    send(page, "what is 12*7?")
    expect(messages(page).nth(1)).to_contain_text("12*7 = 84", timeout=REPLY_TIMEOUT_MS)
    expect(messages(page).nth(1)).to_contain_text("calculator")
    shot(page, "chat")


def test_two_browsers_keep_separate_histories_and_a_reload_keeps_the_chat(server, browser):
    pages = []
    for name in ("Ada", "Grace"):
        context = browser.new_context()
        page = context.new_page()
        page.goto(server)
        send(page, f"My name is {name}.")
        expect(messages(page).nth(1)).to_contain_text(f"Nice to meet you, {name}",
                                                      timeout=REPLY_TIMEOUT_MS)
        pages.append((name, page))
    for name, page in pages:
        page.wait_for_url("**session=*", timeout=REPLY_TIMEOUT_MS)
        page.reload()
        expect(messages(page)).to_have_count(2, timeout=REPLY_TIMEOUT_MS)
        send(page, "What is my name?")
        expect(messages(page).nth(3)).to_contain_text(f"Your name is {name}.",
                                                      timeout=REPLY_TIMEOUT_MS)
        other = "Grace" if name == "Ada" else "Ada"
        expect(page.locator("main")).not_to_contain_text(other)
    shot(pages[0][1], "chat-after-reload")
    for _, page in pages:
        page.context.close()


def test_the_stats_page_counts_the_sessions(server, page):
    page.goto(f"{server}/stats")
    expect(page.get_by_test_id("stMetric").first).to_be_visible(timeout=REPLY_TIMEOUT_MS)
    sessions = page.get_by_test_id("stMetric").filter(has_text="Sessions").first
    expect(sessions).not_to_contain_text("Sessions0")
    shot(page, "stats")
