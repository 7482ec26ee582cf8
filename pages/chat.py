"""The chat page: this browser's conversations, streaming replies, per-chat settings.

The conversation shown is the one named in the URL (``?session=...``), so a reload, a
bookmark or a server restart resumes it; a conversation of another browser never opens.
"""

from __future__ import annotations

import json
import math
import time

import streamlit as st
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
from langchain_core.messages import HumanMessage

from core.chat import BUSY, MOVED_ON
from core.errors import ChatError, MessageRejected
from core.limits import SHOWN_MESSAGES
from core.pool import Place
from core.reply_blocks import BlockSplitter
from core.runs import STALE_AFTER, Run
from core.sessions import ChatbotSession, ChatbotSessionManager
from core.store import StoredMessage
from core.text import escape_markdown
from core.turns import Token, ToolCall, ToolResult
from pages.chat_messages import group_turns, say_what_was_done, show_history, tool_step
from pages.chat_sidebar import (
    SESSION_PARAM,
    agent_settings,
    close_sidebar_on_phone,
    conversation_actions,
    conversation_list,
    new_chat_button,
    switch_to,
    use_shared_agent,
)
from pages.common import browser_id, manager_or_stop
from pages.unsent import LAST_PUT, give_back_unsent

FRAME = 0.05          # seconds between updates of a streaming reply (at most 20 a second)
IDLE_TICK = 0.25      # seconds between updates while no token arrives
ELSEWHERE_POLL = 1.0  # seconds between looks at a reply written by another replica
RESUME_AFTER = 0.2    # seconds from a page showing a reply so far to following it live
SHOWN_END = "shown_end"  # the chat the last page run showed and its last message id
SHOWN_SIZE = "shown_size"  # how many messages of each chat this tab shows
DRAWN = "drawn_chat"  # what the last page run that ended showed: (chat, bubbles)
TAKEN = "message_taken"  # the message the chat box's callback took in this run
Drawn = tuple[str, tuple[int, ...]]


# -- which conversation --------------------------------------------------------------
def open_session(manager: ChatbotSessionManager, owner: str) -> ChatbotSession:
    """The conversation in the URL if it is this browser's, else a new one (with a notice)."""
    wanted = st.query_params.get(SESSION_PARAM)
    current = st.session_state.get("chat_session")
    if current is not None and (current.session_id == wanted or not navigated_in_history()):
        # Any other request's URL can predate this page's last switch: a message sent
        # right after "New chat" comes with the old chat's URL. The switch stands.
        # Back from another page, the URL names no chat and is left so in this run:
        # written here, Streamlit 1.67 files the chat under the page left's path
        # ("/stats?session=..."), which a reload would open. keep_in_step writes it.
        if wanted is not None and current.session_id != wanted:
            st.query_params[SESSION_PARAM] = current.session_id
        return current
    session = manager.get_session(wanted, owner=owner) if wanted else None
    if session is None:
        if wanted:
            st.toast("That chat link is unknown here, so a new chat was started.",
                     icon=":material/info:")
        session = manager.create_session(owner=owner)
    switch_to(session)
    return session


def navigated_in_history() -> bool:
    """This run is the browser's Back or Forward: the URL is what the user asked for.

    Streamlit tells its own widgets the same way that the URL wins then, and only then
    (``SessionState`` in 1.67); it is not public API, so a missing flag reads False.
    """
    ctx = get_script_run_ctx()
    return bool(getattr(ctx, "is_history_navigation", False))


def follow(run: Run, session: ChatbotSession, live: bool = True) -> None:
    """Show the run live: tool steps, finished blocks once each, the growing tail.

    At most ``1 / FRAME`` updates a second, and only the tail is re-sent, so a long reply
    costs the browser O(length). Leaving (a reload, a closed tab) leaves the run going;
    only the Stop button stops it. When the run ends the page re-runs from the store.
    Not ``live``: what it has written so far, once.
    """
    # Streamlit keeps an element of the previous page run until this run writes over
    # it, and a button drawn where another button was ignored clicks here: shift the
    # bubble by one slot, and keep Stop inside it.
    st.empty()
    with st.chat_message("assistant"):
        steps, blocks, tail, status = st.container(), st.container(), st.empty(), st.empty()
        stop_button(session, run.id)
    st.empty()  # over the previous run's Retry or Regenerate, which cannot apply now
    splitter, calls, seen = BlockSplitter(), {}, 0
    waiting = True
    while True:
        events, done = run.read(seen, timeout=IDLE_TICK if live else 0)
        seen += len(events)
        text = ""
        for event in events:
            if isinstance(event, Token):
                text += event.text
            elif isinstance(event, ToolCall):
                calls[event.call_id] = event
            elif isinstance(event, ToolResult):
                call = calls.get(event.call_id)
                with steps:
                    tool_step(event.name, call.args if call else {}, event.content)
        for block in splitter.feed(text):
            blocks.markdown(block)
        if text:
            tail.markdown(splitter.tail)
            if waiting:
                status.empty()
                waiting = False
        elif not events:  # an idle tick writes too: only then can a Stop click get in
            if waiting:
                note = waiting_note(manager.queue_place(run), run.started_at)
                if run.regenerating:  # the answer it replaces is out of sight meanwhile
                    note += " The previous answer comes back if you stop."
                status.caption(note)
            else:  # e.g. a tool or the model's next step is slow: the tail as it is
                tail.markdown(splitter.tail)
        if done or not live:
            break
        time.sleep(FRAME)  # coalesce: what streams meanwhile goes out in the next frame
    if live:
        st.rerun()


def drawing(session: ChatbotSession, rows: list[StoredMessage]) -> Drawn:
    """What a page shows, as ``drawn_over`` compares it: the chat and its bubbles (each
    named by its first message)."""
    return session.session_id, tuple(turn[0].id for turn in group_turns(rows))


def drawn_over(before: Drawn | None, now: Drawn) -> bool:
    """Whether a page showing ``now`` and a live reply draws over all that the last one
    (``before``) showed: the same chat with the same bubbles, and more (a message sent)
    or one less (the reply being written again, drawn over by the live bubble's shift,
    see ``follow``). Not so after another chat, an edit, a branch switched."""
    if before is None or before[0] != now[0]:
        return False
    return now[1][:len(before[1])] == before[1] or before[1][:-1] == now[1]


def follow_after_this_run(run: Run, session: ChatbotSession, shown: Drawn) -> None:
    """The last page shown is not drawn over by this one (``drawn_over``): show this reply
    so far and let this run end, then follow it live in the next.

    A page run that follows a reply lasts as long as the reply, and until a run ends
    Streamlit keeps in sight what the page before drew where this one draws nothing
    (another chat's or branch's longer history, its buttons, bits of its bubbles inside
    the live one). Ending this run clears them; the fragment starts the next one.
    """
    follow(run, session, live=False)

    @st.fragment(run_every=RESUME_AFTER)
    def resume() -> None:
        if st.session_state.get(DRAWN) == shown:  # this run has ended
            st.rerun(scope="app")

    resume()


def waiting_note(place: Place | None, sent_at: float) -> str:
    """What a user waiting for the first word reads: the queue, a provider's cooldown,
    or how long the reply has been waited for (since the message was sent: a reload
    does not start the count again)."""
    if place is None:
        return f"Thinking… {max(0.0, time.time() - sent_at):.0f} s"
    if place.cooldown > 0:
        return ("The provider asked us to slow down; continuing in "
                f"{math.ceil(place.cooldown)} s.")
    if place.capped:
        return ("Your other replies are still being written (a few at a time per person); "
                "this one starts when one of them finishes.")
    if place.overdue:  # the estimate would stand still at a guess: say what is known
        return (f"Waiting for a free agent: you are #{place.position} in the queue; the "
                "reply ahead is taking longer than usual.")
    return (f"Waiting for a free agent: you are #{place.position} in the queue "
            f"(about {math.ceil(place.estimate)} s).")


def stop_button(session: ChatbotSession, run_id: str) -> None:
    st.button("Stop", icon=":material/stop_circle:", key=f"stop-{run_id}",
              on_click=stop_reply, args=(session, run_id))


def watch_elsewhere(session: ChatbotSession, seen: dict, stop_drawn: bool) -> None:
    """A reply written by another replica (or a process that died): its progress is
    shown from the store, and a fragment looks again every ``ELSEWHERE_POLL`` seconds,
    running the page again once the reply moved or went stale (the page then ends it).
    This run ends meanwhile, so a click (Stop asks the reply's owner to stop) is taken
    at once, not after a sleep."""
    if not stop_drawn:  # in the reply's bubble, unless the page does not show it
        stop_button(session, seen["id"])

    @st.fragment(run_every=ELSEWHERE_POLL)
    def look() -> None:
        now = manager.store.runs.running_run(session.session_id)
        if (now is None or now["updated_at"] != seen["updated_at"]
                or now["updated_at"] < time.time() - STALE_AFTER):
            st.rerun(scope="app")

    look()


def keep_in_step(session: ChatbotSession, shown: tuple) -> None:
    """An idle page catches up with other tabs and replicas: every ``TAB_SYNC_SECONDS``
    it compares the chat's change mark with the one it was drawn from and, if it moved,
    runs again (a reply started elsewhere is then followed live, a new chat listed)."""
    @st.fragment(run_every=manager.settings.TAB_SYNC_SECONDS)
    def look() -> None:
        if st.query_params.get(SESSION_PARAM) is None:  # back from Stats (open_session)
            st.query_params[SESSION_PARAM] = session.session_id  # a reload keeps the chat
        try:
            moved = manager.store.change_mark(session.session_id, owner) != shown
        except Exception:  # noqa: BLE001 - a database outage: look again next time
            return
        if moved:
            st.rerun(scope="app")

    look()


# Runs in the page (a constant), once per tab. A Stop button's key is "stop-<run id>";
# its click also goes to app.py's /api/stop as a keepalive request, which the browser
# still sends when the page is reloaded or closed right after the click, when the
# click's own message to the server dies with the page (without it, 4 of 4 such Stops
# were lost). Until answered it is sent again: clicked while the connection was silently
# gone, the click's message and a single request were both lost (2 of 2 in a walk).
STOPS_UNTIL_ANSWERED = """<script>
(() => {
  if (window.poolchatStops) return;
  window.poolchatStops = true;
  const send = (run, until) => fetch("api/stop", {method: "POST", body: run,
                                                 keepalive: true,
                                                 signal: AbortSignal.timeout(3000)})
    .catch(() => Date.now() < until && setTimeout(() => send(run, until), 1000));
  document.addEventListener("click", (event) => {
    const button = event.target.closest?.('[class*="st-key-stop-"] button');
    if (!button) return;
    const holder = button.closest('[class*="st-key-stop-"]');
    const key = [...holder.classList].find((name) => name.startsWith("st-key-stop-"));
    send(key.slice("st-key-stop-".length), Date.now() + 180000);  // any answer will do
  }, true);
})();
</script>"""


def send_stops_until_answered() -> None:
    st.sidebar.html(STOPS_UNTIL_ANSWERED, unsafe_allow_javascript=True)


# Runs in the page (a constant), once per tab. While a reply is written the box stays
# open for the next message, and Enter (or the send arrow, dimmed) does nothing there, as
# in the best chat apps. Sent anyway, it came back refused, but the box was emptied and
# locked for a moment: letters typed meanwhile were lost (6 of 6 in a walk). The page
# says it is busy by its placeholder; a tab that has not seen the reply start yet still
# sends, and gets its message back with the reason (the server's check). After a Stop
# the next send goes at once, before the page is drawn again (the server takes a message
# sent right after a click: pages/clicks.py); held, it sat unsent in the box.
# Right after a send the box stays open too (Streamlit's "disable" lost the letters typed
# in the next 0.3 s, 5 to 8 in a probe). A send held says why above the box, until the
# reply has ended: with text in the box its placeholder does not show, and the message
# sat there, unsent, with no word (3 of 6 in a walk, sent right after an edit).
HOLD_SENDS_WHILE_BUSY = """<script>
(() => {
  if (window.poolchatHoldSends) return;
  window.poolchatHoldSends = true;
  const BUSY = %s, HELD = %s;
  let stopped = false;  // Stop was clicked: the next send goes, drawn again or not yet
  const busy = () => {
    const box = document.querySelector('[data-testid="stChatInputTextArea"]');
    const shown = Boolean(box && box.placeholder === BUSY);
    if (!shown) stopped = false;
    return shown && !stopped;
  };
  const said = document.createElement("div");
  said.setAttribute("role", "status");
  said.hidden = true;
  said.textContent = HELD;
  said.style.cssText = "position: fixed; z-index: 100; padding: 0.4rem 0.8rem; "
    + "border-radius: 0.5rem; font-size: 0.875rem; box-sizing: border-box; "
    + "box-shadow: 0 2px 8px rgba(0, 0, 0, 0.15); "
    + "border: 1px solid color-mix(in srgb, currentColor 25%%, transparent);";
  document.body.appendChild(said);
  let watching = null;
  const placeSaid = () => {  // above the box, in the theme's colours; gone once sendable
    const box = document.querySelector('[data-testid="stChatInput"]');
    if (said.hidden || !box || !busy()) {
      said.hidden = true;
      watching = null;
      return;
    }
    const area = box.getBoundingClientRect();
    const app = getComputedStyle(document.querySelector('[data-testid="stApp"]'));
    const jump = document.querySelector(".poolchat-jump:not([hidden])");  // (READ_BACK)
    const above = jump ? jump.getBoundingClientRect().height + 8 : 0;  // over it, not on
    Object.assign(said.style, {color: app.color, background: app.backgroundColor,
      left: `${area.left}px`, width: `${area.width}px`,
      bottom: `${window.innerHeight - area.top + 12 + above}px`});
    watching = setTimeout(placeSaid, 250);
  };
  const hold = (event) => {
    event.preventDefault();
    event.stopImmediatePropagation();
    said.hidden = false;
    window.dispatchEvent(new Event("poolchat:held"));  // in its place (GIVE_BACK_UNSENT)
    if (!watching) placeSaid();
  };
  const sent = (event) => {
    if (busy()) {
      hold(event);
    } else {
      stopped = false;  // one send after a Stop; then the reply it starts holds again
      said.hidden = true;
      window.dispatchEvent(new Event("poolchat:sent"));  // (KEEP_DRAFTS_PER_CHAT)
    }
  };
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing
        && event.target.matches?.('[data-testid="stChatInputTextArea"]')) {
      sent(event);
    }
  }, true);
  document.addEventListener("click", (event) => {
    if (event.target.closest?.('[data-testid="stChatInputSubmitButton"]')) {
      sent(event);
    } else if (event.target.closest?.("button")) {  // Stop, or Retry, Regenerate…
      stopped = Boolean(event.target.closest('[class*="st-key-stop-"]'));
    }
  }, true);
  const style = document.createElement("style");
  style.textContent = `[data-testid="stChatInput"]:has(textarea[placeholder="${BUSY}"])
    [data-testid="stChatInputSubmitButton"] { opacity: 0.3; cursor: not-allowed; }`;
  document.head.appendChild(style);
})();
</script>"""


def hold_sends_while_busy() -> None:
    st.sidebar.html(HOLD_SENDS_WHILE_BUSY % (json.dumps(BUSY_PLACEHOLDER),
                                             json.dumps(HELD_WHILE_BUSY)),
                    unsafe_allow_javascript=True)


HELD_WHILE_BUSY = ("A reply is being written: your message waits here. Press Enter "
                   "once the reply has ended, or Stop it to send now.")


# Runs in the page (a constant), once per tab: says when the page's address changed
# (Streamlit changes it with pushState and replaceState, Back and Forward by popstate),
# for the page scripts below that follow the chat shown.
SAY_URL_CHANGES = """<script>
(() => {
  if (window.poolchatUrlChanges) return;
  window.poolchatUrlChanges = true;
  let at = location.pathname + location.search;
  const say = () => {  // Streamlit also replaces the address with the same one
    const now = location.pathname + location.search;
    if (now === at) return;
    at = now;
    window.dispatchEvent(new Event("poolchat:navigated"));
  };
  for (const name of ["pushState", "replaceState"]) {
    const original = history[name];
    history[name] = function (...args) {
      const result = original.apply(this, args);
      say();
      return result;
    };
  }
  window.addEventListener("popstate", say);
})();
</script>"""


# Runs in the page (a constant), once per tab. Streamlit has one chat box for every chat:
# a draft typed in one chat went along to the next one opened (and a reload lost it).
# Here each chat keeps its own draft, as in the best chat apps: put aside when another
# chat is opened (New chat, the list, Back), given back when it is opened again or the
# page reloaded, dropped once sent. Drafts stay in this browser (localStorage, the 50
# latest), never on the server. New chat or a chat of the list puts the draft aside at
# the click: what is typed before the other chat is drawn is for that chat (it was put
# aside with the one left, and came back there, 5 times in 6 while a reply streamed).
KEEP_DRAFTS_PER_CHAT = """<script>
(() => {
  if (window.poolchatDrafts) return;
  window.poolchatDrafts = true;
  const STORE = "poolchat-drafts", KEEP = 50;
  const BOX = '[data-testid="stChatInputTextArea"]';
  const OPENS = '[class*="st-key-new-chat"], [class*="st-key-open-"]';
  const chatInUrl = () => new URLSearchParams(location.search).get(%s);
  const drafts = () => {
    try { return JSON.parse(localStorage.getItem(STORE)) || {}; } catch { return {}; }
  };
  const keep = (chat, text) => {
    if (!chat) return;
    const all = drafts();
    delete all[chat];
    if (text.trim()) all[chat] = text;  // the newest last
    const names = Object.keys(all);
    names.slice(0, Math.max(0, names.length - KEEP)).forEach((name) => delete all[name]);
    try { localStorage.setItem(STORE, JSON.stringify(all)); } catch { /* storage off */ }
  };
  const fill = (box, text) => {  // as typing does: the box's own state follows
    Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value").set
      .call(box, text);
    box.dispatchEvent(new Event("input", {bubbles: true}));
  };
  let shown = null, drawnBox = null;  // the chat the box was for; that box
  let asked = 0;  // when another chat was asked for: the box is for that one meanwhile
  const leaving = () => asked > Date.now() - 10000;  // (unless it never came)
  const follow = () => {
    const chat = chatInUrl(), box = document.querySelector(BOX);
    if (!chat || !box) return;  // another page, or the chat not in the URL yet
    if (chat !== shown && box === drawnBox && leaving()) {  // the chat asked for:
      if (box.value) keep(chat, box.value);  // typed for it since the click
      else fill(box, drafts()[chat] || "");
    } else if (chat !== shown && box === drawnBox) {  // another chat opened in this box:
      keep(shown, box.value);  // this draft put aside (typing kept it too), its own back
      fill(box, drafts()[chat] || "");
    } else if ((chat !== shown || box !== drawnBox) && !box.value && drafts()[chat]) {
      fill(box, drafts()[chat]);  // a box drawn anew: a (re)load, back from Stats
    }
    if (chat !== shown) asked = 0;
    shown = chat;
    drawnBox = box;
  };
  window.addEventListener("poolchat:navigated", follow);  // (SAY_URL_CHANGES)
  setInterval(follow, 250);  // and a box drawn later than its URL
  document.addEventListener("click", (event) => {  // New chat, or another chat listed
    const asking = event.target.closest?.(OPENS), box = document.querySelector(BOX);
    if (!asking || !box || shown !== chatInUrl() || leaving()
        || asking.querySelector('[data-testid="stBaseButton-primary"]')) return;  // shown
    keep(shown, box.value);  // put aside now, before the next letter typed
    asked = Date.now();
    fill(box, "");
  }, true);
  document.addEventListener("input", (event) => {
    if (event.target.matches?.(BOX) && shown === chatInUrl() && !leaving()) {
      keep(shown, event.target.value);
    }
  }, true);
  window.addEventListener("poolchat:sent", () => leaving() || keep(shown, ""));
  follow();
})();
</script>"""


def say_url_changes() -> None:
    st.sidebar.html(SAY_URL_CHANGES, unsafe_allow_javascript=True)


def keep_drafts_per_chat() -> None:
    st.sidebar.html(KEEP_DRAFTS_PER_CHAT % json.dumps(SESSION_PARAM),
                    unsafe_allow_javascript=True)


# Runs in the page (a constant), once per tab. Streamlit keeps the chat scrolled to its
# bottom as it grows, and a reader who scrolled up while a reply streamed was pulled back
# down at the next words (its own reading of a scroll during growth: not the user's).
# As in the best chat apps, scrolling up now stops the following: Streamlit's pulls wait
# while the reader is up, a button above the chat box jumps back to the latest message
# (and says when a reply is being written), and from the bottom the view follows again.
READ_BACK = """<script>
(() => {
  if (window.poolchatReadBack) return;
  window.poolchatReadBack = true;
  const BUSY = %s, AWAY = 160;  // pixels above the bottom that show the button
  const VIEW = '[data-testid="stAppScrollToBottomContainer"]';
  const native = Object.getOwnPropertyDescriptor(Element.prototype, "scrollTop");
  let up = false, going = null;  // the reader went up: the view stays where it is
  let anchor = null;  // the first message in sight when earlier ones were asked for
  const follow = () => [up, going] = [false, null];
  const view = () => {
    const found = document.querySelector(VIEW);
    if (found && !found.poolchatHeld) {  // Streamlit moves it by scrollTop, readers not
      found.poolchatHeld = true;
      // Streamlit only ever takes it down, in an animation whose steps are counted from
      // where it began: begun up there, a step after "Latest" pulled the view back up
      Object.defineProperty(found, "scrollTop", {configurable: true,
        get() { return native.get.call(this); },
        set(value) { if (!up && value >= native.get.call(this)) native.set.call(this, value); }});
    }
    return found;
  };
  const left = (v) => v.scrollHeight - v.clientHeight - native.get.call(v);
  // another chat or page: it opens at its end, as ever
  window.addEventListener("poolchat:navigated", follow);  // (SAY_URL_CHANGES)
  // a message sent, a reply asked for again, an edit sent: its reply is followed
  window.addEventListener("poolchat:sent", follow);  // (HOLD_SENDS_WHILE_BUSY)
  const ASKS = '[class*="st-key-regenerate-button"], [class*="st-key-edit-send-"], '
    + '[class*="st-key-example-"]';
  document.addEventListener("click", (event) => {
    if (event.target.closest?.(ASKS)) follow();
  }, true);
  // what a reader does to go up or down (not any scroll: a page drawn again moves it
  // too); a reader who went down to the bottom is followed again
  const goes = (way) => {  // "up", "down", or "either" (the bottom tells)
    going = way;
    anchor = null;  // the reader moves on from the place kept for earlier messages
    if (way !== "down") up = true;
  };
  const reader = {capture: true, passive: true};
  document.addEventListener("wheel", (event) => {
    if (event.target.closest?.(VIEW)) goes(event.deltaY < 0 ? "up" : "down");
  }, reader);
  document.addEventListener("touchmove", (event) => {
    if (event.target.closest?.(VIEW)) goes("either");
  }, reader);
  document.addEventListener("mousedown", (event) => {  // on the view itself: its scrollbar
    if (event.target.matches?.(VIEW)) goes("either");
  }, reader);
  document.addEventListener("keydown", (event) => {
    if (!document.querySelector(VIEW)
        || event.target.matches?.("input, textarea, select, [contenteditable]")) return;
    if (["PageUp", "ArrowUp", "Home"].includes(event.key)) goes("up");
    if (["PageDown", "ArrowDown", "End", " "].includes(event.key)) goes("down");
  }, true);
  document.addEventListener("scroll", (event) => {  // gone down to the bottom: followed
    const v = view();
    if (v && event.target === v && going !== "up" && left(v) < 2) up = false;
  }, true);
  const busyUpThere = (event) => {  // a click or focus up in the chat (there by any way)
    const v = view();
    if (v && v.contains(event.target) && left(v) >= AWAY
        && !event.target.closest('[data-testid="stBottom"]')) up = true;  // not the box
  };
  document.addEventListener("mousedown", busyUpThere, true);
  document.addEventListener("focusin", busyUpThere, true);
  const BUBBLES = '[data-testid="stChatMessage"]';
  document.addEventListener("click", (event) => {  // earlier messages, to be read
    if (!event.target.closest?.('[class*="st-key-show-earlier"]')) return;
    up = true;
    const v = view(), bubbles = [...document.querySelectorAll(BUBBLES)];
    const top = v ? v.getBoundingClientRect().top : 0;
    const first = bubbles.find((bubble) => bubble.getBoundingClientRect().bottom > top);
    anchor = first && {text: first.innerText, fromEnd: bubbles.length - bubbles.indexOf(first),
                       at: first.getBoundingClientRect().top, limit: Date.now() + 30000};
    if (anchor) anchor.until = anchor.limit;  // however long the page takes to come
  }, true);
  const keepAnchor = (v) => {  // the earlier ones come above: the reader's place stays
    const bubbles = [...document.querySelectorAll(BUBBLES)];
    const near = bubbles.length - anchor.fromEnd;  // where it should be, once all came
    let first = null;  // the same message (its text), the one nearest to there
    bubbles.forEach((bubble, i) => {
      if (bubble.innerText === anchor.text
          && (!first || Math.abs(i - near) < Math.abs(first[1] - near))) first = [bubble, i];
    });
    anchor.until = Math.min(anchor.limit, Date.now() + 3000);  // while they are drawn
    if (first) native.set.call(v, native.get.call(v)
                                  + first[0].getBoundingClientRect().top - anchor.at);
  };
  let height = 0;
  const keepAtBottom = () => {  // Streamlit's own following lost the end now and then
    const v = view();
    if (anchor && Date.now() > anchor.until) anchor = null;
    if (v && v.scrollHeight !== height) {  // the chat grew: its end, unless read back
      height = v.scrollHeight;  // (a move without growth, find in page, is left alone)
      if (anchor) keepAnchor(v);
      else if (!up && left(v) >= 1) native.set.call(v, height);
    }
    requestAnimationFrame(keepAtBottom);
  };
  requestAnimationFrame(keepAtBottom);
  const button = document.createElement("button");
  button.type = "button";
  button.className = "poolchat-jump";
  button.hidden = true;
  button.setAttribute("aria-label", "Jump to the latest message");
  const style = document.createElement("style");
  style.textContent = `.poolchat-jump { position: fixed; z-index: 100; transform:
    translateX(-50%%); padding: 0.3rem 0.9rem; border-radius: 999px; cursor: pointer;
    font: inherit; font-size: 0.875rem; box-shadow: 0 2px 8px rgba(0, 0, 0, 0.15);
    border: 1px solid color-mix(in srgb, currentColor 25%%, transparent); }
    .poolchat-jump:hover { border-color: rgb(255, 75, 75); }`;
  document.head.appendChild(style);
  document.body.appendChild(button);
  button.addEventListener("click", () => {
    const v = view();
    follow();
    if (v) v.scrollTop = v.scrollHeight;  // at once: Streamlit follows from there
    button.hidden = true;
  });
  const place = () => {
    const v = view(), box = document.querySelector('[data-testid="stChatInput"]');
    if (!v || !box || left(v) < (up ? 2 : AWAY)) {  // held up there: said, however near
      button.hidden = true;
      return;
    }
    const area = box.getBoundingClientRect();
    const app = getComputedStyle(document.querySelector('[data-testid="stApp"]'));
    const writing = box.querySelector("textarea")?.placeholder === BUSY;
    button.textContent = writing ? "\\u2193 A reply is being written" : "\\u2193 Latest";
    button.style.color = app.color;  // the theme's, light or dark
    button.style.background = app.backgroundColor;
    button.style.left = `${area.left + area.width / 2}px`;
    button.style.bottom = `${window.innerHeight - area.top + 12}px`;
    button.hidden = false;
  };
  document.addEventListener("scroll", place, true);
  window.addEventListener("resize", place);
  setInterval(place, 250);  // and as the chat grows, or another page is drawn
})();
</script>"""


def read_back() -> None:
    st.sidebar.html(READ_BACK % json.dumps(BUSY_PLACEHOLDER), unsafe_allow_javascript=True)


def shown_rows(session: ChatbotSession) -> tuple[list[StoredMessage], bool]:
    """The chat's newest messages, as many as this tab asked to see, and whether there
    are earlier ones. A window cut inside a turn starts at its next question: an answer
    or a tool step without the question above it reads wrong."""
    size = st.session_state.get(SHOWN_SIZE, {}).get(session.session_id, SHOWN_MESSAGES)
    rows = manager.store.load_stored(session.session_id, last=size + 1)
    if len(rows) <= size:
        return rows, False
    rows = rows[1:]
    start = next((i for i, r in enumerate(rows) if isinstance(r.message, HumanMessage)), 0)
    return rows[start:], True


def show_earlier(session: ChatbotSession, shown: int) -> None:
    sizes = st.session_state.setdefault(SHOWN_SIZE, {})
    sizes[session.session_id] = shown + SHOWN_MESSAGES


def stop_reply(session: ChatbotSession, run_id: str) -> None:
    """The Stop button's callback: runs before the page, so the partial is stored first.
    It stops the reply it was drawn under, never one started since in another tab."""
    session.stop(run_id)


def regenerate(shown_last: int) -> None:
    """The Regenerate (Retry) button's callback, as ``send_typed``: what it was shown
    under goes with it (a chat moved on since refuses it)."""
    session = st.session_state.get("chat_session")
    try:
        if session is not None:
            manager.chat.regenerate(session, shown_last=shown_last)
    except (MessageRejected, ChatError) as exc:
        st.session_state.refused = str(exc)


def shown_end(session: ChatbotSession) -> int | None:
    """The last message this tab showed of ``session`` (0: none), if it showed it: a
    message sent is refused if the chat has moved on since (another tab's message or
    version switched), not stored under what its writer never saw."""
    chat, last = st.session_state.get(SHOWN_END) or (None, None)
    return last if chat == session.session_id else None


# Runs in the page (a constant: no user text in it). A send locks the box until its page
# run ends, so the browser's focus falls to the page: typing after the reply went nowhere.
# Not when the user last put the cursor in another field that is still there: disabled
# while the connection was down, it lost the focus, and the page drawn again after the
# reconnect ran this and took the cursor (1 in 4 runs of the browser test).
FOCUS_CHAT_BOX = """<script>
(() => {
  if (!window.matchMedia("(pointer: fine)").matches) return;  // a phone: no keyboard pop%s
  const FIELD = "input, textarea, select, [contenteditable]";
  let tries = 0;
  const settled = () => {  // at once, then until the box is drawn enabled (up to 3 s)
    const box = document.querySelector('[data-testid="stChatInputTextArea"]');
    const active = document.activeElement;  // a button clicked (New chat) keeps none
    const put = lastPut.at;
    if ((active && active !== box && active.matches(FIELD))
        || (put && put !== box && put.isConnected && put.matches?.(FIELD))
        || String(window.getSelection()) || ++tries > 120) {
      return true;  // the user is in another field, or selecting: leave it
    }
    if (box && !box.disabled) {
      box.focus({preventScroll: true});
      return true;
    }
    return false;
  };
  if (!settled()) {
    const timer = setInterval(() => settled() && clearInterval(timer), 25);
  }
})();
</script>"""


def focus_chat_box(chat: str, last_shown: int) -> None:
    """Put the cursor back in the chat box once a reply has ended, as chat apps do,
    unless the user is in another field. Drawn again (and so run) only when the chat or
    the last message shown changes: a click on thumbs or a popover must not pull the
    cursor away (and every new chat, with nothing shown, is another one)."""
    # a container keyed by both: an element only changed in place is not run again
    # (an empty chat after another empty chat kept the focus on New chat)
    st.container(key=f"focus-{chat}-{int(last_shown)}").html(
        FOCUS_CHAT_BOX % LAST_PUT, unsafe_allow_javascript=True)


def count_page_view(manager: ChatbotSessionManager) -> None:
    if not st.session_state.get("page_counted"):
        st.session_state.page_counted = True
        manager.page_viewed()


EXAMPLES = ("What is 12*7?", "What time is it?", "My name is Ada. What is my name?")
OFFLINE_NOTICE = "offline-demo"
# The box stays open while a reply is written (here or in another tab): a draft can be
# typed meanwhile; the page holds its Enter until the reply ends (HOLD_SENDS_WHILE_BUSY).
BUSY_PLACEHOLDER = "A reply is being written… type ahead"  # one line on a phone


def chat_header(manager: ChatbotSessionManager, session: ChatbotSession, title: str) -> None:
    """Title, then which agent answers (a custom one can be reset in one click)."""
    st.title(escape_markdown(title) or "New chat", anchor=False)
    spec = session.agent_spec or manager.default_spec
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        if manager.settings.offline:
            st.badge("offline demo", icon=":material/cloud_off:", color="gray")
        if session.has_custom_agent:
            st.badge(f"custom agent · {spec.model} · temperature {spec.temperature:g}",
                     icon=":material/tune:", color="violet")
            st.button("Reset to shared agent", icon=":material/restart_alt:", type="tertiary",
                      key="header-reset", on_click=use_shared_agent, args=(session,))
        else:
            st.badge(f"shared pool · {manager.members.models()}", icon=":material/hub:",
                     color="blue")
    if manager.settings.offline and not manager.notice_dismissed(owner, OFFLINE_NOTICE):
        with st.container(border=True):
            st.markdown(":material/cloud_off: **Offline demo mode** — replies come from "
                        "PoolChat's built-in offline model, not an LLM. It can do arithmetic, "
                        "tell the time and remember your name. Set `OPENAI_API_KEY` (and "
                        "`OPENAI_BASE_URL` for Ollama, vLLM or llama.cpp) to chat with a "
                        "real model.")
            st.button("Got it", key="dismiss-offline", type="tertiary",
                      on_click=manager.dismiss_notice, args=(owner, OFFLINE_NOTICE))


def example_prompts() -> None:
    """An empty chat offers prompts that work (the offline model answers all three)."""
    st.caption("Try one of these:")
    with st.container(horizontal=True, gap="small"):
        for text in EXAMPLES:
            st.button(text, key=f"example-{text}", icon=":material/lightbulb:",
                      on_click=send_example, args=(text,))


def send_typed(text: str | None = None) -> None:
    """The chat box's callback. A callback, so the message is stored before the page
    runs: a click arriving right after Enter (an example, New chat) waits for it
    (pages/clicks.py), instead of cutting off the page's run before it stored the
    message (5 times in 6 an example took the message's place)."""
    text = text or st.session_state.get("chat_box")
    st.session_state[TAKEN] = text
    if text:
        refused = send(text)
        if refused:  # back into the chat box with the reason: nothing to retype
            st.session_state.restore = (text, refused)


def send_example(text: str) -> None:
    """An example's callback, as ``send_typed``. It was offered by an empty chat: once
    the chat has a message (one sent just before the click), it is not sent; its other
    refusals go into the chat box."""
    refused = send(text)
    if refused and refused not in (BUSY, MOVED_ON):
        st.session_state.restore = (text, refused)


def send(text: str) -> str | None:
    """Start answering ``text`` in the chat this tab shows now (after the callbacks of
    the requests before this one: "New chat" then a message sends it to the new chat).
    Returns why it was refused, if it was."""
    session = st.session_state.get("chat_session")
    if session is None:  # no chat drawn yet in this tab (a forged request)
        return "This chat is not open any more; send your message again."
    try:
        session.start(text, shown_last=shown_end(session))
    except (MessageRejected, ChatError) as exc:
        return str(exc)
    return None


# -- page ----------------------------------------------------------------------------
manager = manager_or_stop()
owner = browser_id()
count_page_view(manager)
session = open_session(manager, owner)
shown = manager.store.change_mark(session.session_id, owner)  # before anything is read
drawn_before = st.session_state.get(DRAWN)
if not shown[0] and session.saved:  # its row is gone: deleted in another tab or window
    st.toast("This chat was deleted in another tab or window; here is a new one.",
             icon=":material/delete:")
    session = manager.create_session(owner=owner)
    switch_to(session)
    shown = manager.store.change_mark(session.session_id, owner)
refusal = st.session_state.pop("refused", None)  # a Regenerate, in the callbacks
run = manager.chat.active_run(session.session_id)
elsewhere = None if run else manager.store.runs.running_run(session.session_id)
if elsewhere is not None and elsewhere["updated_at"] < time.time() - STALE_AFTER:
    manager.chat.sweep()  # its owner died: the reply ends, marked interrupted
    elsewhere = None
restore = st.session_state.get("restore")  # a message refused in the callbacks
if restore is not None:
    text, refusal = restore
    # the box fills only with a value other than the one it was last filled with (its
    # own rule): the same message refused twice in a row came back empty. A space at
    # the end, every other time, makes it another (a message is sent stripped)
    if text == st.session_state.get("restored_last"):
        text = text + " " if not text.endswith(" ") else text.rstrip()
    st.session_state.chat_box = st.session_state.restored_last = text
    del st.session_state["restore"]  # last: a run cut off before here fills it again
busy = run is not None or elsewhere is not None
prompt = st.chat_input(BUSY_PLACEHOLDER if busy else "Message PoolChat", key="chat_box",
                       on_submit=send_typed)
if prompt is not None and st.session_state.get(TAKEN) != prompt:
    # delivered without its callback: the session's first run (a page left open across
    # a server restart) has drawn no chat box yet. Taken here, then drawn with its outcome
    send_typed(prompt)
    st.rerun()
st.session_state[TAKEN] = None

stored = manager.store.get_session(session.session_id)
title = stored["title"] if stored else ""
if stored:  # saved by another replica, the settings are in the database only
    manager.adopt_settings(session, stored["agent_spec"])
rows, earlier = shown_rows(session)
last_shown = rows[-1].id if rows else 0
# what a message sent from this page will follow; none while a reply is written (its
# sends are refused, and the reply's last row may change before the next page draws it)
st.session_state[SHOWN_END] = None if busy else (session.session_id, last_shown)

new_chat_button(manager, owner)
conversation_actions(manager, session, owner, title, rows, whole=not earlier)
agent_settings(manager, session)
conversation_list(manager, session, owner)
send_stops_until_answered()
hold_sends_while_busy()
say_url_changes()  # for the two below
keep_drafts_per_chat()
give_back_unsent(SESSION_PARAM)
read_back()
close_sidebar_on_phone()

chat_header(manager, session, title)
say_what_was_done()
if earlier:
    st.caption(f"Showing the latest {len(rows)} messages.")
    st.button("Show earlier messages", icon=":material/history:", key="show-earlier",
              on_click=show_earlier, args=(session, len(rows)))
refusal = refusal or st.session_state.pop("edit_refused", None)
if run is not None:  # its reply streams below, live: history up to its user message
    history = [r for r in rows if r.id <= run.user_message_id]
    drawn = drawing(session, history)
    show_history(history, session, answering=True)
    if refusal:  # e.g. sent from a tab that had not seen this reply start
        st.toast(refusal, icon=":material/block:", duration="long")
    if drawn_over(drawn_before, drawn):
        follow(run, session)
    else:
        follow_after_this_run(run, session, drawn)
else:
    drawn = drawing(session, rows)
    stop_inside = show_history(rows, session, busy=elsewhere is not None, in_running_reply=(
        None if elsewhere is None else lambda: stop_button(session, elsewhere["id"])))
    if refusal and elsewhere is not None:  # the page is drawn again as the reply moves
        st.toast(refusal, icon=":material/block:", duration="long")
    elif refusal:
        st.warning(refusal, icon=":material/block:")
    if elsewhere is not None:
        watch_elsewhere(session, elsewhere, stop_inside)
    elif rows:
        label = "Retry" if isinstance(rows[-1].message, HumanMessage) else "Regenerate"
        # In a container: Streamlit keeps a widget that a later run draws over in sight
        # until that run ends (a whole reply); a container drawn over goes at once.
        with st.container():
            st.button(label, icon=":material/refresh:", key="regenerate-button",
                      on_click=regenerate, args=(rows[-1].id,))
    else:
        example_prompts()
    if elsewhere is None and manager.settings.TAB_SYNC_SECONDS:
        keep_in_step(session, shown)
    if elsewhere is None:
        focus_chat_box(session.session_id, last_shown)
st.session_state[DRAWN] = drawn

