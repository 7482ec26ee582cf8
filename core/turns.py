"""One chat turn through an agent: what is sent, and what comes back as events.

The agent holds no state: each turn gets the session's recent history, trimmed to a
token budget with LangChain's ``trim_messages``. Streaming yields plain-text tokens and
tool steps, and reports each complete message so the caller can store it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    trim_messages,
)
from langchain_core.messages.utils import count_tokens_approximately


@dataclass(frozen=True, slots=True)
class Token:
    """A piece of the assistant's reply text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asked for a tool."""

    call_id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool answered."""

    call_id: str
    name: str
    content: str


class ReplyCutOff(RuntimeError):
    """The provider's stream stopped before the reply was finished."""


@dataclass(slots=True)
class TurnResult:
    """The messages a turn produced, in order; ``reply`` is the final answer's text."""

    messages: list[BaseMessage] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)  # streamed text not yet a message

    def cut_off(self) -> bool:
        """The final reply ended without a finish reason: its stream was dropped.

        A provider connection that dies mid-stream ends the stream without an error; the
        only trace is the missing ``finish_reason``. The reply moves to ``partial``.
        """
        last = self.messages[-1] if self.messages else None
        if (isinstance(last, AIMessage) and not last.tool_calls
                and not last.response_metadata.get("finish_reason")):
            self.messages.pop()
            self.partial = [last.text]
            return True
        return False

    @property
    def reply(self) -> str:
        for message in reversed(self.messages):
            if isinstance(message, AIMessage) and not message.tool_calls:
                return message.text
        return ""


Event = Token | ToolCall | ToolResult


def well_formed(history: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Drop tool calls left without results (an interrupted turn), orphan results and
    empty replies (a run stopped before its first word)."""
    answered = {m.tool_call_id for m in history if isinstance(m, ToolMessage)}
    kept: list[BaseMessage] = []
    open_calls: set[str] = set()
    for message in history:
        if isinstance(message, AIMessage) and not message.tool_calls and not message.text:
            continue
        if isinstance(message, AIMessage) and message.tool_calls:
            ids = {call["id"] for call in message.tool_calls}
            if not ids <= answered:
                continue
            open_calls |= ids
        elif isinstance(message, ToolMessage):
            if message.tool_call_id not in open_calls:
                continue
        kept.append(message)
    return kept


def model_input(history: Sequence[BaseMessage], max_tokens: int,
                tokens: Sequence[int] | None = None) -> list[BaseMessage]:
    """The trimmed history to send: newest messages within budget, starting on a human.

    ``tokens`` (per-message estimates, when the caller has them) lets a history that is
    already within budget skip ``trim_messages``.
    """
    if tokens is not None and sum(tokens) <= max_tokens:
        first = next((i for i, m in enumerate(history) if isinstance(m, HumanMessage)),
                     len(history))
        return well_formed(history[first:])
    history = well_formed(history)
    trimmed = trim_messages(history, max_tokens=max_tokens,
                            token_counter=count_tokens_approximately, strategy="last",
                            start_on="human", include_system=False)
    return trimmed or [m for m in history[-1:] if isinstance(m, HumanMessage)]


def invoke(agent: Any, history: list[BaseMessage], done: TurnResult) -> None:
    result = agent.invoke({"messages": history})
    done.messages.extend(result["messages"][len(history):])
    _check(done)


async def ainvoke(agent: Any, history: list[BaseMessage], done: TurnResult) -> None:
    result = await agent.ainvoke({"messages": history})
    done.messages.extend(result["messages"][len(history):])
    _check(done)


def _check(done: TurnResult) -> None:
    if done.cut_off():
        raise ReplyCutOff("the reply stopped before it was finished")


def _events(mode: str, data: Any, done: TurnResult) -> Iterator[Event]:
    if mode == "messages":
        chunk, _meta = data
        if isinstance(chunk, AIMessageChunk) and chunk.text:
            done.partial.append(chunk.text)
            yield Token(chunk.text)
        return
    for update in (data or {}).values():
        for message in (update or {}).get("messages", []):
            done.messages.append(message)
            if isinstance(message, AIMessage):
                done.partial.clear()
                for call in message.tool_calls:
                    yield ToolCall(call["id"], call["name"], call["args"])
            elif isinstance(message, ToolMessage):
                yield ToolResult(message.tool_call_id, message.name or "", message.text)


def stream(agent: Any, history: list[BaseMessage], done: TurnResult) -> Iterator[Event]:
    """Yield events as the agent works; complete messages are appended to ``done``."""
    for mode, data in agent.stream({"messages": history}, stream_mode=["messages", "updates"]):
        yield from _events(mode, data, done)
    _check(done)


async def astream(agent: Any, history: list[BaseMessage], done: TurnResult
                  ) -> AsyncIterator[Event]:
    async for mode, data in agent.astream({"messages": history},
                                          stream_mode=["messages", "updates"]):
        for event in _events(mode, data, done):
            yield event
    _check(done)
