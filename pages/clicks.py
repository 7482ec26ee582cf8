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

Streamlit itself merges two requests that both wait for a run under way into one, and
runs their callbacks in the order the widgets were drawn, not clicked: chat X then chat
Y opened X. So, in that merge, a newer click replaces an older unspent one, as a click
replaced the one before with ``fastReruns`` on; a message sent (a chat input's value)
keeps the click before it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from streamlit.runtime.scriptrunner import ScriptRunner
from streamlit.runtime.scriptrunner_utils import script_requests
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from streamlit.runtime.state.safe_session_state import SafeSessionState

_dispatching = threading.local()  # whether this thread is running a run's callbacks


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
