"""The offline demo model shipped with PoolChat: honest, deterministic, no network.

It is a real LangChain chat model (tool binding, streaming), so it drives the same agent
loop as an LLM: arithmetic goes through the calculator tool, the time through the clock
tool, and it can recall what was said earlier in the history it is given. Anything else
gets a plain statement that this is an offline demo and how to connect a real model.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

OFFLINE_MODEL_NAME = "offline-demo"
OFFLINE_HELP = (
    "I am PoolChat's offline demo model, not an LLM: I can do arithmetic "
    "(try “what is 12*7?”), tell the time, and remember your name in this chat. "
    "To talk to a real model, set OPENAI_API_KEY (and OPENAI_BASE_URL for Ollama, "
    "vLLM or llama.cpp) and restart."
)

# An arithmetic expression: numbers joined by at least one operator, brackets allowed.
# It starts where a run of brackets and spaces, or a number, starts, never inside one,
# and never gives back what a run took (possessive): tried at every digit or space of
# a long run, the search took quadratic time (4 s for 8,000 characters, the server
# frozen).
_NUMBER = r"\d+(?:\.\d+)?"
_EXPRESSION = re.compile(
    rf"(?<![(\s])[(\s]*+(?<![\d.])-?{_NUMBER}[)\s]*+"
    rf"(?:(?:\*\*|//|[-+*/%^×÷])[(\s]*+-?{_NUMBER}[)\s]*+)+"
)
_NAME_GIVEN = re.compile(r"\bmy name is\s+([^\W\d_][\w' .-]{0,60}?)\s*(?:[.!,;]|$)", re.I)
_NAME_ASKED = re.compile(r"\bwhat(?:'s| is) my name\b|\bwho am i\b", re.I)
_TIME_ASKED = re.compile(
    r"\b(?:what time|the time|current time|what day|date today|today's date)\b", re.I)
_RECALL_ASKED = re.compile(r"\bwhat did i (?:say|ask|write)\b", re.I)


class OfflineChatModel(BaseChatModel):
    """A deterministic chat model for demos and tests.

    ``latency`` simulates a provider's time to answer; ``stream_delay`` paces streamed
    words so that streaming (and stopping it) can be seen in the UI.
    """

    model_name: str = OFFLINE_MODEL_NAME
    temperature: float = 0.0
    latency: float = 0.0
    stream_delay: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "poolchat-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind by name, as providers do: the model itself stays one object (a copy per
        agent turn would rebuild its serialized form on every call)."""
        names = tuple(getattr(t, "name", None) or getattr(t, "__name__", str(t)) for t in tools)
        return self.bind(tool_names=names, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        if self.latency:
            time.sleep(self.latency)
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages, **kwargs))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        if self.latency:
            await asyncio.sleep(self.latency)  # without holding a thread
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages, **kwargs))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if self.latency:
            time.sleep(self.latency)
        for i, chunk in enumerate(self._chunks(messages, **kwargs)):
            if i and self.stream_delay:
                time.sleep(self.stream_delay)
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        if self.latency:
            await asyncio.sleep(self.latency)
        for i, chunk in enumerate(self._chunks(messages, **kwargs)):
            if i and self.stream_delay:
                await asyncio.sleep(self.stream_delay)
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _chunks(self, messages: list[BaseMessage], **kwargs: Any) -> list[ChatGenerationChunk]:
        """The reply as stream chunks: one tool-call chunk, or the text word by word."""
        reply = self.respond(messages, **kwargs)
        if reply.tool_calls:
            call = reply.tool_calls[0]
            chunk = AIMessageChunk(content="", tool_call_chunks=[{
                "name": call["name"], "args": json.dumps(call["args"]), "id": call["id"],
                "index": 0}], response_metadata={"finish_reason": "tool_calls"})
            return [ChatGenerationChunk(message=chunk)]
        words = re.findall(r"\S+\s*", reply.text)
        return [ChatGenerationChunk(message=AIMessageChunk(content=word, response_metadata=(
            {"finish_reason": "stop", "model_name": self.model_name}
            if i == len(words) - 1 else {}))) for i, word in enumerate(words)]

    def respond(self, messages: Sequence[BaseMessage], tool_names: Sequence[str] = (),
                **_: Any) -> AIMessage:
        """The whole reply to a history: a tool call, an answer from a tool, or text."""
        meta = {"finish_reason": "stop", "model_name": self.model_name}
        last = messages[-1] if messages else HumanMessage("")
        if isinstance(last, ToolMessage):
            return AIMessage(_answer_from_tool(messages), response_metadata=meta)
        text = last.text if isinstance(last, HumanMessage) else ""
        expression = _find_expression(text)
        if expression and "calculator" in tool_names:
            return self._call("calculator", {"expression": expression})
        if _TIME_ASKED.search(text) and "current_time" in tool_names:
            return self._call("current_time", {})
        return AIMessage(_answer_from_text(text, messages), response_metadata=meta)

    def _call(self, name: str, args: dict[str, Any]) -> AIMessage:
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}],
                         response_metadata={"finish_reason": "tool_calls",
                                            "model_name": self.model_name})


def _find_expression(text: str) -> str | None:
    match = _EXPRESSION.search(text)
    return " ".join(match.group(0).split()) if match else None


def _human_texts(messages: Sequence[BaseMessage]) -> list[str]:
    return [m.text for m in messages if isinstance(m, HumanMessage)]


def _answer_from_tool(messages: Sequence[BaseMessage]) -> str:
    result = messages[-1]
    call = next((c for m in reversed(messages) if isinstance(m, AIMessage)
                 for c in m.tool_calls if c["id"] == result.tool_call_id), None)
    if call and call["name"] == "calculator":
        expression = call["args"].get("expression", "")
        if result.text.startswith("error"):
            return f"I could not calculate {expression}: {result.text[7:]}."
        return f"{expression} = {result.text}"
    if call and call["name"] == "current_time":
        return f"It is {result.text.split(' (')[0]}."
    return f"The tool returned: {result.text}"


def _answer_from_text(text: str, messages: Sequence[BaseMessage]) -> str:
    given = _NAME_GIVEN.search(text)
    if given:
        return f"Nice to meet you, {given.group(1).strip()}. I'll remember your name in this chat."
    if _NAME_ASKED.search(text):
        for earlier in reversed(_human_texts(messages)[:-1]):
            found = _NAME_GIVEN.search(earlier)
            if found:
                return f"Your name is {found.group(1).strip()}."
        return "You haven't told me your name in this chat yet."
    if _RECALL_ASKED.search(text):
        earlier = _human_texts(messages)[:-1]
        if earlier:
            return f"Earlier you said: “{earlier[-1]}”"
        return "This is the first thing you said in this chat."
    return OFFLINE_HELP
