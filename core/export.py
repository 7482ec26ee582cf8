"""A conversation as a file to download: Markdown for people, JSON for programs."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.store import COMPLETE, INTERRUPTED, RUNNING, STOPPED, StoredMessage
from core.text import escape_markdown

ROLE_NAMES = {"human": "You", "ai": "Assistant", "tool": "Tool", "system": "System"}
STATUS_NOTES = {STOPPED: "stopped: partial reply", INTERRUPTED: "interrupted: partial reply",
                RUNNING: "still being written: partial reply"}
def file_name(title: str, suffix: str) -> str:
    """A download name from a title: letters, digits and dashes only."""
    stem = re.sub(r"[^\w]+", "-", title, flags=re.ASCII).strip("-")[:40]
    return f"{stem or 'conversation'}.{suffix}"


def timestamp(seconds: float) -> str:
    """UTC, to the second, ISO 8601."""
    return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=0).isoformat()


def conversation_json(title: str, rows: list[StoredMessage]) -> str:
    """Messages with role, text, time, model, tool calls, status and feedback, as JSON."""
    messages: list[dict[str, Any]] = []
    for row in rows:
        message = row.message
        entry: dict[str, Any] = {"role": message.type, "content": message.text,
                                 "status": row.status, "created_at": timestamp(row.created_at)}
        if row.model:
            entry["model"] = row.model
        if row.score is not None:
            entry["feedback"] = {"score": "up" if row.score else "down",
                                 "comment": row.comment}
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [{"name": c["name"], "args": c["args"]}
                                   for c in message.tool_calls]
        if isinstance(message, ToolMessage):
            entry["tool"] = message.name
        messages.append(entry)
    return json.dumps({"title": title, "messages": messages}, ensure_ascii=False, indent=2)


def conversation_markdown(title: str, rows: list[StoredMessage]) -> str:
    """A readable transcript with times and models; tool steps as code, partial replies
    marked."""
    lines = [f"# {escape_markdown(title) or 'Conversation'}", ""]
    for row in rows:
        message, status = row.message, row.status
        if isinstance(message, ToolMessage):
            lines += [f"**Tool {escape_markdown(message.name or '')}** returned:", "",
                      *_fenced(message.text), ""]
            continue
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                lines += ["**Tool call:**", "",
                          *_fenced(f"{call['name']}({json.dumps(call['args'])})"), ""]
            if not message.text:
                continue
        who = ROLE_NAMES.get(message.type, message.type)
        note = "" if status == COMPLETE else f" *({STATUS_NOTES.get(status, status)})*"
        when = timestamp(row.created_at).replace("T", " ").replace("+00:00", " UTC")
        by = f", {escape_markdown(row.model)}" if row.model and message.type == "ai" else ""
        body = message.text if not isinstance(message, HumanMessage) else _quote(message.text)
        lines += [f"**{who}**{note} · {when}{by}:", "", body, ""]
    return "\n".join(lines)


def _fenced(text: str) -> list[str]:
    """A code block whose fence no run of backticks in ``text`` can close: a tool's
    arguments and results (the model's choice) cannot become Markdown."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *text.splitlines(), fence]


def _quote(text: str) -> str:
    """User text as an indented code block, so it cannot inject Markdown or HTML."""
    return "\n".join("    " + line for line in text.splitlines())
