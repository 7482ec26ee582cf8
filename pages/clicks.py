"""A click is not lost to the request that follows it (Streamlit 1.67's runner).

A run takes its request (the click: widget states with the button's trigger, which the
browser clears once sent) and then checks for a newer request at every session-state
access, also at the start of the callbacks and inside them. A request that arrives in
that window (a message sent right after "New chat", under load) stops the run with the
newer request's states only: the callback never runs, or is cut off at its first
``st.session_state`` access, and the click is gone (the message went into the chat left).

Here a request that stops a run before its callbacks are done carries that run's states
too, merged as Streamlit merges two waiting requests (the newer value wins, an unspent
trigger is kept): the click's callback runs in the next run, before the message's page.
A callback cut off midway runs again from its start. Requests that stop a run after its
callbacks (a click during a streaming reply) are left as they are.

Merging keeps both clicks of two quick clicks, and Streamlit runs their callbacks in the
order the widgets were drawn, not clicked: chat X then chat Y opened X. So, in every
merge (ours and Streamlit's own for waiting requests), a newer click replaces an older
unspent one, as a click replaced the one before with ``fastReruns`` on; a message sent
(a chat input's value) keeps the click before it.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any

from streamlit.runtime.scriptrunner import RerunException, ScriptRunner
from streamlit.runtime.scriptrunner_utils import script_requests
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from streamlit.runtime.state.safe_session_state import SafeSessionState

_dispatching = threading.local()  # the states whose callbacks this thread is running


def keep_clicks() -> None:
    """Install once per process, before a session's runner is made (app.py's import):
    each runner binds its check for newer requests when it is created."""
    if getattr(ScriptRunner, "_keeps_clicks", False):
        return
    ScriptRunner._keeps_clicks = True
    script_requests._coalesce_widget_states = _last_click_wins(
        script_requests._coalesce_widget_states)
    SafeSessionState.on_script_will_rerun = _remembering(
        SafeSessionState.on_script_will_rerun)
    ScriptRunner._maybe_handle_execution_control_request = _carrying(
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


def _remembering(on_script_will_rerun):
    @functools.wraps(on_script_will_rerun)
    def wrapper(self, fresh_widget_states, *args: Any, **kwargs: Any) -> None:
        _dispatching.states = fresh_widget_states
        try:
            on_script_will_rerun(self, fresh_widget_states, *args, **kwargs)
        finally:
            _dispatching.states = None
    return wrapper


def _carrying(check):
    @functools.wraps(check)
    def wrapper(self) -> None:
        try:
            check(self)
        except RerunException as newer:
            unspent = getattr(_dispatching, "states", None)
            if unspent is None:
                raise
            data = newer.rerun_data
            raise RerunException(dataclasses.replace(
                data, widget_states=script_requests._coalesce_widget_states(
                    unspent, data.widget_states))) from None  # (last click wins)
    return wrapper
