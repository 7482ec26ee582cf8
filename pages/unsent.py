"""A connection silently gone: said, and a message sent into it given back, not lost.

On dead Wi-Fi that sends no reset, the page still thinks it is connected: Enter empties
the box, the message goes nowhere, and Streamlit does not send it again once the page
reconnects (4 times in 4 in a walk, nothing shown or stored). The page now keeps what it
sent until a page run answers it; if the connection went (or the tab was loaded again)
first, the chat drawn after it tells: a message it does not show goes back into the box,
with a note, to send again. Meanwhile the page says that the server does not answer
(Streamlit notices a connection closed, not one that went silent).
"""

from __future__ import annotations

import json

import streamlit as st

NOTE = ("Your last message did not reach PoolChat: the connection dropped. It is back in "
        "the box; press Enter to send it.")
SILENT = ("No answer from PoolChat for a few seconds: the connection may be down. A "
          "message that does not get through comes back to the box.")

# Where the user last put the cursor, by focus or by a click (on the page itself too),
# for the page scripts that put it back in the chat box: a field disabled while the
# connection is down loses the focus, and that is not the user leaving it. Kept once per
# tab (the first script that runs it sets it up).
LAST_PUT = """
  const lastPut = window.poolchatLastPut ||= (() => {
    const where = {at: null};
    const put = (event) => { where.at = event.target; };
    document.addEventListener("focusin", put, true);
    document.addEventListener("mousedown", put, true);
    return where;
  })();"""

# Runs in the page (constants: no user text in it), once per tab. The page's run and
# connection states are those Streamlit marks on the app's root. Kept per tab (session
# storage) so that a reload before the answer judges it too.
GIVE_BACK_UNSENT = """<script>
(() => {
  if (window.poolchatUnsent) return;
  window.poolchatUnsent = true;
  const PARAM = %s, NOTE = %s, SILENT = %s, KEY = "poolchat-unsent";
  const BOX = '[data-testid="stChatInputTextArea"]';
  const ASKED = '[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarUser"])';
  const chatInUrl = () => new URLSearchParams(location.search).get(PARAM);
  const app = () => document.querySelector('[data-testid="stApp"]');
  const connected = () => app()?.getAttribute("data-test-connection-state") === "CONNECTED";
  const kept = () => {
    try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
  };
  const keep = (value) => {
    try {
      if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
      else sessionStorage.removeItem(KEY);
    } catch { /* storage off */ }
  };
  const letters = (text) => text.replace(/[^\\p{L}\\p{N}]+/gu, "");  // as drawn (markdown)
  // the message sent that no run has answered yet; "dropped": the connection went, or
  // the tab was loaded again, since it was sent: the next chat drawn tells
  let unsent = kept(), ran = false;
  if (unsent) [unsent.dropped, ran] = [true, true];  // loaded again: this run draws it
  const note = document.createElement("div");
  note.className = "poolchat-unsent";
  note.setAttribute("role", "status");
  note.hidden = true;
  note.textContent = NOTE;
  const style = document.createElement("style");
  style.textContent = `.poolchat-unsent { position: fixed; z-index: 100; padding: 0.4rem
    0.8rem; border-radius: 0.5rem; font-size: 0.875rem; box-sizing: border-box;
    border: 1px solid rgb(255, 75, 75); box-shadow: 0 2px 8px rgba(0, 0, 0, 0.15); }`;
  document.head.appendChild(style);
  document.body.appendChild(note);
  const place = (element) => {  // above the chat box; false: no chat box (Stats)
    const box = document.querySelector('[data-testid="stChatInput"]');
    if (!box) return false;
    const area = box.getBoundingClientRect();
    const theme = getComputedStyle(app());
    element.style.color = theme.color;  // the theme's, light or dark
    element.style.background = theme.backgroundColor;
    element.style.left = `${area.left}px`;
    element.style.width = `${area.width}px`;
    element.style.bottom = `${window.innerHeight - area.top + 12}px`;
    return true;
  };
  const giveBack = (text) => {
    const box = document.querySelector(BOX);
    if (!box) return;
    const value = box.value.trim() ? `${text}\\n\\n${box.value}` : text;
    Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value").set
      .call(box, value);  // as typing does: the box's state and the chat's draft follow
    box.dispatchEvent(new Event("input", {bubbles: true}));
    place(note);
    note.hidden = false;
  };
  const judge = () => {
    const {text, chat} = unsent;
    ran = false;
    if (chat !== chatInUrl()) return;  // another chat open: judged once its own is drawn
    if (!document.querySelector(BOX)) {  // the run has ended, its box is drawn a moment on
      setTimeout(() => unsent?.text === text && judge(), 100);
      return;
    }
    unsent = null;
    keep(null);
    const asked = [...document.querySelectorAll(ASKED)].slice(-3)
      .map((bubble) => letters(bubble.innerText));
    if (!asked.some((shown) => shown.includes(letters(text)))) giveBack(text);
  };
  const look = () => {
    if (!unsent || !app()) return;
    const script = app().getAttribute("data-test-script-state");
    if (!connected()) {
      [unsent.dropped, ran] = [true, false];
      keep(unsent);
    } else if (script === "running") {
      if (!unsent.dropped) {  // a run since the send, on the same connection: it came
        unsent = null;
        keep(null);
      } else {
        ran = true;
      }
    } else if (unsent.dropped && ran && script === "notRunning") {
      judge();  // the first run since the connection came back has drawn the chat
    }
  };
  window.addEventListener("poolchat:sent", () => {  // (HOLD_SENDS_WHILE_BUSY)
    note.hidden = true;
    const box = document.querySelector(BOX);
    if (!box || !box.value.trim()) return;
    unsent = {text: box.value, chat: chatInUrl(), dropped: false};
    ran = false;
    keep(unsent);
  });
  window.addEventListener("poolchat:navigated", () => { note.hidden = true; });
  window.addEventListener("poolchat:held", () => { note.hidden = true; });  // said there
  document.addEventListener("input", (event) => {
    if (event.target.matches?.(BOX) && !event.target.value) note.hidden = true;
  }, true);
  window.addEventListener("resize", () => [note, silent].forEach(place));
  // Streamlit disables the box while the connection is down, which takes the cursor out
  // of it: once back, the cursor goes back (the next letters typed went nowhere)
  // if the user last put it there (LAST_PUT)
  let cursorWasThere = false;%s
  const cursorBack = () => {
    if (!connected()) {
      cursorWasThere ||= Boolean(lastPut.at?.matches?.(BOX));
      return;
    }
    if (!cursorWasThere) return;
    cursorWasThere = false;
    let tries = 0;
    const back = () => {  // once the box is drawn enabled again (up to 5 s)
      const box = document.querySelector(BOX), active = document.activeElement;
      if (box && !box.disabled) {
        if (!active || active === document.body) box.focus({preventScroll: true});
      } else if (++tries < 50) {
        setTimeout(back, 100);
      }
    };
    back();
  };
  new MutationObserver(() => { look(); cursorBack(); }).observe(document.body, {
    subtree: true, attributes: true,
    attributeFilter: ["data-test-script-state", "data-test-connection-state"]});
  look();
  // A dead connection that says nothing is not noticed by Streamlit (its page showed a
  // reply being written for minutes): the page asks the server how it is, and says when
  // two questions in a row go unanswered, until one is answered or Streamlit says it.
  // Not while the tab is hidden (nobody reads it; each open tab asked every 3 s).
  const silent = note.cloneNode();
  silent.textContent = SILENT;
  document.body.appendChild(silent);
  let misses = 0;
  const answered = () => { misses = 0; silent.hidden = true; };
  setInterval(() => {
    if (!connected() || document.hidden) return answered();
    fetch("_stcore/health", {cache: "no-store", signal: AbortSignal.timeout(3000)})
      .then(answered, () => {
        if (++misses >= 2 && note.hidden) silent.hidden = !place(silent);
      });
  }, 3000);
})();
</script>"""


def give_back_unsent(session_param: str) -> None:
    st.sidebar.html(GIVE_BACK_UNSENT % (json.dumps(session_param), json.dumps(NOTE),
                                        json.dumps(SILENT), LAST_PUT),
                    unsafe_allow_javascript=True)
