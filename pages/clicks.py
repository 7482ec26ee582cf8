"""A click or a message is not lost to the request that follows it (Streamlit 1.67).

A run takes its request (a click, a message: widget states with a trigger, which the
browser clears once sent) and then checks for a newer request at every session-state
access, also at the start of the callbacks and inside them. A request that arrives in
that window (a message sent right after "New chat", an example clicked right after
Enter, under load) stopped the run with the newer request's states only: the callback
never ran, or was cut off at its first ``st.session_state`` access, and the click or
the message was gone.

Here a newer request waits while a run's callbacks are dispatched: they run to their
end, once, and the newer request stops the run at its first check after them, so each
request's callbacks run in the order the browser sent them, each on the state the one
before left. What a click or a message does is therefore done in its callback (the
chat box's too); a page body cut off by the next request is drawn by that one.

The browser sends a message a moment late (its triggers go at the end of the event
loop's turn), but a form's submit or a page link at once. Right after Enter:
- a form's submit carries every value the page holds, the message included, and the
  message's own request follows: the message was sent twice, and the copy came back
  refused ("a reply is being written") into the box (4 times in 10 in Chromium). A
  request that only repeats the message of the one just before is that copy: dropped.
- a page link ("Stats") goes first, the message's request then names the page left:
  the page went back to the chat (5 times in 10). A message right after a page change
  goes with the page it changed to (its callback, on the chat page's widgets, still
  stores it; a page change that has already ended runs on a new runner, and the chat
  page takes the message, ``pages/chat.py``).
Both within ``ORDER_WINDOW`` of the request before, a few milliseconds in the browser.

Streamlit itself merges two requests that both wait for a run under way into one, and
runs their callbacks in the order the widgets were drawn, not clicked: chat X then chat
Y opened X. So, in that merge, a newer click replaces an older unspent one, as a click
replaced the one before with ``fastReruns`` on; a message sent (a chat input's value)
keeps the click before it.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from typing import Any

from streamlit.runtime.scriptrunner import ScriptRunner
from streamlit.runtime.scriptrunner_utils import script_requests
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from streamlit.runtime.state.safe_session_state import SafeSessionState

_dispatching = threading.local()  # whether this thread is running a run's callbacks
ORDER_WINDOW = 0.3  # seconds: the browser sends a message's request a few ms late


def keep_clicks() -> None:
    """Install once per process, before a session's runner is made (app.py's import):
    each runner binds its check for newer requests when it is created."""
    if getattr(ScriptRunner, "_keeps_clicks", False):
        return
    ScriptRunner._keeps_clicks = True
    script_requests._coalesce_widget_states = _last_click_wins(
        script_requests._coalesce_widget_states)
    SafeSessionState.on_script_will_rerun = _marking_dispatch(
        SafeSessionState.on_script_will_rerun)
    ScriptRunner._maybe_handle_execution_control_request = _deferring(
        ScriptRunner._maybe_handle_execution_control_request)
    script_requests.ScriptRequests._request_rerun_locked = _in_the_order_sent(
        script_requests.ScriptRequests._request_rerun_locked)


def _last_click_wins(coalesce):
    @functools.wraps(coalesce)
    def wrapper(old_states, new_states):
        if old_states and new_states and any(_clicked(w) for w in new_states.widgets):
            kept = WidgetStates()
            kept.widgets.extend(w for w in old_states.widgets if not _clicked(w))
            old_states = kept
        return coalesce(old_states, new_states)
    return wrapper


def _clicked(state: WidgetState) -> bool:
    """A button's unspent click (its trigger; a chat input's message is another kind)."""
    return state.WhichOneof("value") == "trigger_value" and state.trigger_value


def _marking_dispatch(on_script_will_rerun):
    @functools.wraps(on_script_will_rerun)
    def wrapper(self, *args: Any, **kwargs: Any) -> None:
        _dispatching.active = True
        try:
            on_script_will_rerun(self, *args, **kwargs)
        finally:
            _dispatching.active = False
    return wrapper


def _deferring(check):
    @functools.wraps(check)
    def wrapper(self) -> None:
        if not getattr(_dispatching, "active", False):
            check(self)  # (a newer request waits until this run's callbacks are done)
    return wrapper


def _in_the_order_sent(request_rerun_locked):
    @functools.wraps(request_rerun_locked)
    def wrapper(self, new_data) -> bool:
        sent, now = _messages(new_data.widget_states), time.monotonic()
        before, before_sent, at = getattr(self, "_poolchat_latest", (None, None, 0.0))
        if sent and before is not None and now - at < ORDER_WINDOW:
            if before_sent == sent and not any(
                    _clicked(w) for w in new_data.widget_states.widgets):
                return True  # the browser's copy: the request before carries the message
            if _page_change(before) and before.page_script_hash != new_data.page_script_hash:
                new_data = dataclasses.replace(  # sent on the page left: go on to the new
                    new_data, page_script_hash=before.page_script_hash,
                    page_name=before.page_name, query_string=before.query_string)
        self._poolchat_latest = (new_data, sent, now)  # the runner's latest request
        return request_rerun_locked(self, new_data)
    return wrapper


def _page_change(data) -> bool:
    """A page link's request: no widget states at all."""
    return data.widget_states is not None and not data.widget_states.widgets


def _messages(states: WidgetStates | None) -> dict[str, bytes]:
    """The messages a request sends: each chat input's value, by widget."""
    return {w.id: w.chat_input_value.SerializeToString() for w in (states.widgets if states
                                                                   else ())
            if w.WhichOneof("value") == "chat_input_value" and w.chat_input_value.ListFields()}
