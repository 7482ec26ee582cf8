"""How the chat page draws stored messages: bubbles with tool steps, notes on replies
cut short, and a footer per message (versions, edit, copy, feedback, time, model)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.errors import ChatError, MessageRejected
from core.limits import FEEDBACK_COMMENT_CHARS
from core.sessions import ChatbotSession
from core.store import COMPLETE, INTERRUPTED, RUNNING, STOPPED, StoredMessage
from pages.common import get_manager

UNANSWERED = "No reply was saved for this message (interrupted)."
STATUS_NOTES = {STOPPED: "Stopped by you — partial reply.",
                INTERRUPTED: "Interrupted — partial reply.",
                RUNNING: "Still being written…"}
# a reply written elsewhere with nothing yet: queued, waiting out a provider's limit,
# or the model thinking (another process knows which)
WAITING = "Waiting for the reply to begin…"



def tool_step(name: str, args: dict, result: str | None) -> None:
    shown = ", ".join(f"{key}={value!r}" for key, value in args.items())
    with st.expander(f":material/build: {name}({shown})"):
        st.caption("Input")
        st.json(args)
        st.caption("Result")
        st.code(result if result is not None else "(no result)", language=None)


def show_history(rows: list[StoredMessage], session: ChatbotSession,
                 answering: bool = False, busy: bool = False,
                 in_running_reply: Callable[[], None] | None = None) -> bool:
    """One bubble per user message and one per assistant turn (tool steps, then text),
    each with its time, a copy button and, on replies, the model and feedback.

    A user message left without a reply says why, and a last reply cut off by an error
    shows it, each from the run that answered its question (one query); the last message
    is being ``answering`` live below, when it is. While a reply is written (here or,
    ``busy``, by another process) no message can be edited, and the reply being written
    has no footer yet (nothing to rate or copy until it ends); ``in_running_reply`` is
    drawn inside its bubble (Stop), and the return value says whether it was.
    """
    versions = get_manager().store.versions(
        session.session_id, [r.id for r in rows if isinstance(r.message, HumanMessage)])
    busy = busy or answering
    results = {r.message.tool_call_id: r.message.text for r in rows
               if isinstance(r.message, ToolMessage)}
    grouped = group_turns(rows)
    unanswered = {turn[0].id for index, turn in enumerate(grouped)
                  if isinstance(turn[0].message, HumanMessage)
                  and _left_unanswered(grouped, index, answering)}
    last_question = _question_of_last_reply(grouped)
    runs = get_manager().store.runs.runs_answering(
        session.session_id, unanswered | {last_question} - {None})
    drawn = False
    for index, turn in enumerate(grouped):
        first = turn[0]
        if isinstance(first.message, HumanMessage):
            with st.chat_message("user"):
                st.text(first.message.text)
                message_footer(first.message.text, first.created_at, key=first.id,
                               before=lambda row=first: (
                    version_switcher(session, row.id, versions.get(row.id), busy),
                    edit_button(session, row, busy)))
                # a slot drawn every time: a note from the page before (stopped, say)
                # goes as soon as this draws over it, not when a live reply below ends
                note = st.empty()
                if first.id in unanswered:
                    with note.container():
                        unanswered_note(runs.get(first.id))
            continue
        with st.chat_message("assistant"):
            texts, answer = [], None
            for row in turn:
                message = row.message
                if not isinstance(message, AIMessage):
                    continue
                for call in message.tool_calls:
                    tool_step(call["name"], call["args"], results.get(call["id"]))
                if message.text:
                    st.markdown(message.text)
                    texts.append(message.text)
                    answer = row
                if row.status != COMPLETE:
                    st.caption(WAITING if row.status == RUNNING and not _begun(turn)
                               else STATUS_NOTES.get(row.status, row.status))
            last_run = runs.get(last_question) if index == len(grouped) - 1 else None
            if last_run and last_run["error"]:
                # a regenerate that failed before its first word wrote nothing here: the
                # rows shown are older than it (a run's own rows are from its start on)
                kept = all(row.created_at < last_run["started_at"] for row in turn)
                st.error(("Regenerating failed; the answer above is kept. " if kept else "")
                         + last_run["error"], icon=":material/error:")
            if answer is not None and answer.status != RUNNING:
                message_footer("\n\n".join(texts), answer.created_at, answer, session,
                               key=answer.id)
            if in_running_reply is not None and turn[-1].status == RUNNING:
                in_running_reply()
                drawn, in_running_reply = True, None
    return drawn


def _begun(turn: list[StoredMessage]) -> bool:
    """Something of the reply is there: a word or a tool step."""
    return any(isinstance(r.message, AIMessage) and (r.message.text or r.message.tool_calls)
               for r in turn)


def version_switcher(session: ChatbotSession, message_id: int, versions: list[int] | None,
                     busy: bool) -> None:
    """"‹ 2 / 3 ›" on a message that was edited: each version is its own branch."""
    if not versions:
        return
    at = versions.index(message_id)
    st.button("", icon=":material/chevron_left:", key=f"older-{message_id}", type="tertiary",
              disabled=busy or at == 0, help="Previous version",
              on_click=choose_branch, args=(session, versions[at - 1]))
    st.caption(f"{at + 1} / {len(versions)}", width="content")
    st.button("", icon=":material/chevron_right:", key=f"newer-{message_id}",
              type="tertiary", disabled=busy or at == len(versions) - 1, help="Next version",
              on_click=choose_branch,
              args=(session, versions[min(at + 1, len(versions) - 1)]))


def edit_button(session: ChatbotSession, row: StoredMessage, busy: bool) -> None:
    """Edit an earlier message: the chat forks there and the new version is answered."""
    with st.popover("", icon=":material/edit:", help="Edit this message", type="tertiary",
                    disabled=busy):
        key = f"edit-text-{row.id}"
        st.text_area("Edit your message", value=row.message.text, key=key,
                     max_chars=get_manager().settings.MAX_MESSAGE_CHARS)
        # disabled too: a box opened before a reply started elsewhere stays open, and its
        # text stays to send once that reply has ended
        st.button("Send the new version", key=f"edit-send-{row.id}", type="primary",
                  icon=":material/send:", on_click=send_edit,
                  args=(session, row.id, key, row.message.text),
                  disabled=busy, help="A reply is being written" if busy else None)


UNCHANGED = "That is the message as it was: change it to send a new version."
SWITCH_BUSY = "A reply is being written in this chat; switch versions once it has ended."


def send_edit(session: ChatbotSession, message_id: int, key: str, was: str) -> None:
    text = st.session_state.get(key, "")
    if text.strip() == was.strip():  # a second, identical version: nothing to answer
        st.session_state.edit_refused = UNCHANGED
        return
    try:
        session.edit(message_id, text)
    except (MessageRejected, ChatError) as exc:
        st.session_state.edit_refused = str(exc)


def message_footer(text: str, created_at: float, reply: StoredMessage | None = None,
                   session: ChatbotSession | None = None,
                   before: Callable[[], object] | None = None, key: int = 0) -> None:
    """Time (and model), a copy button, and feedback on a reply, on one discreet line
    (after what ``before`` draws: a user message's versions and edit button).

    Keyed by message: a popover left open (the editor, a copy) must not open on another
    message that comes to its place (the window of a long chat moves with an edit)."""
    with st.container(horizontal=True, vertical_alignment="center", gap="small",
                      key=f"footer-{key}"):
        if before is not None:
            before()
        with st.popover("", icon=":material/content_copy:", help="Copy as Markdown",
                        type="tertiary"):
            st.code(text, language="markdown", wrap_lines=True)
        if reply is not None and session is not None:
            # keyed by reply (a reused id: a new widget) and drawn as stored (a thumb
            # turned in another tab). Not keyed by the score: a new widget is drawn
            # beside the old one, which stays in sight until the run ends (a whole
            # reply, when the thumb is given while another reply streams)
            key = f"feedback-{reply.id}-{reply.created_at}"
            st.session_state[key] = reply.score
            st.feedback("thumbs", key=key, on_change=save_feedback,
                        args=(session, reply.id, key))
            if reply.score is not None:
                with st.popover("", icon=":material/comment:" if reply.comment
                                else ":material/add_comment:", type="tertiary",
                                help="Your comment" if reply.comment
                                else "Comment on this reply"):
                    with st.form(f"comment-{reply.id}", border=False):
                        drawn = (reply.score, reply.comment)
                        typed = f"comment-{reply.id}-{zlib.crc32(repr(drawn).encode())}"
                        st.text_area("Comment (optional)", value=reply.comment,
                                     max_chars=FEEDBACK_COMMENT_CHARS, key=typed)
                        # a callback: it runs before the page, which may then draw the
                        # field from another stored comment (a new widget, the text lost)
                        st.form_submit_button("Save comment", on_click=save_comment,
                                              args=(session, reply.id, drawn, typed))
        who = f" · {reply.model}" if reply is not None and reply.model else ""
        if who and reply.version is not None and reply.version > 1:  # reconfigured live
            who += f" v{reply.version}"
        st.caption(f"{local_time(created_at)}{who}")


SAID = "said_after_rerun"


def say_what_was_done() -> None:
    """A toast for what the last run did before it drew the page again (a comment
    saved): a toast drawn by the run that ``st.rerun`` ends is never seen."""
    said = st.session_state.pop(SAID, None)
    if said:
        st.toast(said[0], icon=said[1])


def local_time(seconds: float) -> str:
    """The browser's local time when Streamlit knows its zone, else UTC."""
    when = datetime.fromtimestamp(seconds, browser_zone())
    today = datetime.now(when.tzinfo).date()
    return f"{when:%H:%M}" if when.date() == today else f"{when:%d %b %Y, %H:%M}"


def choose_branch(session: ChatbotSession, message_id: int) -> None:
    if not get_manager().choose_branch(session, message_id):  # a tab that missed a start
        st.session_state.edit_refused = SWITCH_BUSY


def save_feedback(session: ChatbotSession, message_id: int, key: str) -> None:
    get_manager().set_feedback(session, message_id, st.session_state.get(key))


def save_comment(session: ChatbotSession, message_id: int,
                 drawn: tuple[int | None, str], key: str) -> None:
    """Save the comment typed, unless this reply's feedback changed since the field was
    drawn (another tab): then nothing is written over it, and the user is told."""
    comment = st.session_state.get(key, "")
    if not get_manager().set_feedback(session, message_id, drawn[0], comment,
                                      expected=drawn):
        st.session_state[SAID] = ("This reply or its feedback was changed in another tab "
                                  "meanwhile; here it is now.", ":material/sync_problem:")
    elif comment.strip() != drawn[1]:
        st.session_state[SAID] = ("Comment saved." if comment.strip()
                                  else "Comment removed.", ":material/check:")


def _left_unanswered(grouped: list[list[StoredMessage]], index: int, answering: bool
                     ) -> bool:
    """The user message at ``index`` has no reply after it (and none is coming live)."""
    following = grouped[index + 1][0].message if index + 1 < len(grouped) else None
    return isinstance(following, HumanMessage) or (following is None and not answering)


def _question_of_last_reply(grouped: list[list[StoredMessage]]) -> int | None:
    """The user message the last bubble answers, if the last bubble is a reply."""
    if (len(grouped) < 2 or isinstance(grouped[-1][0].message, HumanMessage)
            or not isinstance(grouped[-2][0].message, HumanMessage)):
        return None
    return grouped[-2][0].id


def unanswered_note(run: dict | None) -> None:
    """Why a user message has no reply, from the run that answered it (None: no run
    was stored, or it was lost with its process)."""
    if run is None:
        st.caption(UNANSWERED)
    elif run["status"] == RUNNING:
        st.caption(STATUS_NOTES[RUNNING])
    elif run["status"] == STOPPED:
        st.caption("Stopped by you before any reply.")
    elif run["error"]:
        st.error(run["error"], icon=":material/error:")
    else:
        st.caption(UNANSWERED)


def group_turns(rows: list[StoredMessage]) -> list[list[StoredMessage]]:
    """Split into user messages and the assistant turns between them."""
    turns: list[list[StoredMessage]] = []
    for row in rows:
        is_user = isinstance(row.message, HumanMessage)
        if is_user or not turns or isinstance(turns[-1][0].message, HumanMessage):
            turns.append([row])
        else:
            turns[-1].append(row)
    return turns



def browser_zone() -> tzinfo:
    """The browser's time zone when Streamlit knows it, else UTC."""
    try:
        return ZoneInfo(st.context.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc
