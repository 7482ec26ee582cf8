"""A conversation as a file to download: Markdown for people, JSON for programs."""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from core.store import COMPLETE

ROLE_NAMES = {"human": "You", "ai": "Assistant", "tool": "Tool", "system": "System"}
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def escape_markdown(text: str) -> str:
    """User text safe to show where Markdown is rendered: every markup character escaped."""
    return _MARKDOWN.sub(r"\\\1", " ".join(text.split()))


def file_name(title: str, suffix: str) -> str:
    """A download name from a title: letters, digits and dashes only."""
    stem = re.sub(r"[^\w]+", "-", title, flags=re.ASCII).strip("-")[:40]
    return f"{stem or 'conversation'}.{suffix}"


def conversation_json(title: str, rows: list[tuple[BaseMessage, str]]) -> str:
    """Messages with role, text, tool calls and status, as pretty-printed JSON."""
    messages: list[dict[str, Any]] = []
    for message, status in rows:
        entry: dict[str, Any] = {"role": message.type, "content": message.text,
                                 "status": status}
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [{"name": c["name"], "args": c["args"]}
                                   for c in message.tool_calls]
        if isinstance(message, ToolMessage):
            entry["tool"] = message.name
        messages.append(entry)
    return json.dumps({"title": title, "messages": messages}, ensure_ascii=False, indent=2)


def conversation_markdown(title: str, rows: list[tuple[BaseMessage, str]]) -> str:
    """A readable transcript; tool steps as code, partial replies marked."""
    lines = [f"# {escape_markdown(title) or 'Conversation'}", ""]
    for message, status in rows:
        if isinstance(message, ToolMessage):
            lines += [f"> **Tool `{message.name}`** returned `{message.text}`", ""]
            continue
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                lines += [f"> **Tool call** `{call['name']}({json.dumps(call['args'])})`", ""]
            if not message.text:
                continue
        who = ROLE_NAMES.get(message.type, message.type)
        note = "" if status == COMPLETE else f" *({status})*"
        body = message.text if not isinstance(message, HumanMessage) else _quote(message.text)
        lines += [f"**{who}**{note}:", "", body, ""]
    return "\n".join(lines)


def _quote(text: str) -> str:
    """User text as an indented code block, so it cannot inject Markdown or HTML."""
    return "\n".join("    " + line for line in text.splitlines())
