"""Fakes that plug in where real parts do: at the agent factory, never the provider client."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from core.agents import AgentSpec
from core.offline_model import OfflineChatModel
from core.tools import DEFAULT_TOOLS


def offline_factory(latency: float = 0.0, fail_with: BaseException | None = None):
    """An agent factory like the real one, with a slow or failing offline model."""

    def build(spec: AgentSpec):
        model = (FailingModel(error=fail_with) if fail_with is not None
                 else OfflineChatModel(latency=latency, temperature=spec.temperature))
        return create_agent(model, tools=list(DEFAULT_TOOLS),
                            system_prompt=spec.system_prompt or None)

    return build


class FailingModel(OfflineChatModel):
    """An offline model whose provider fails on every call."""

    error: BaseException

    model_config = {"arbitrary_types_allowed": True}

    def _generate(self, *args, **kwargs):
        raise self.error

    async def _agenerate(self, *args, **kwargs):
        raise self.error

    def _stream(self, *args, **kwargs):
        raise self.error

    async def _astream(self, *args, **kwargs):
        raise self.error
        yield  # an async generator that fails at once


class ObservedModel(OfflineChatModel):
    """An offline model that calls ``observe(messages)`` before answering."""

    observe: Callable

    def _generate(self, messages, *args, **kwargs):
        self.observe(messages)
        return super()._generate(messages, *args, **kwargs)

    async def _agenerate(self, messages, *args, **kwargs):
        self.observe(messages)
        return await super()._agenerate(messages, *args, **kwargs)

    def _stream(self, messages, *args, **kwargs):
        self.observe(messages)
        yield from super()._stream(messages, *args, **kwargs)

    async def _astream(self, messages, *args, **kwargs):
        self.observe(messages)
        async for chunk in super()._astream(messages, *args, **kwargs):
            yield chunk


def observed_factory(observe: Callable):
    def build(spec: AgentSpec):
        return create_agent(ObservedModel(observe=observe), tools=list(DEFAULT_TOOLS),
                            system_prompt=spec.system_prompt or None)

    return build


class ScriptedModel(BaseChatModel):
    """A chat model that answers from a script, as llm's MockModel does.

    ``enqueue(text, pause_after=k, pause=30)`` queues a reply streamed word by word; after
    the k-th word (before the first, for 0) it stalls for ``pause`` seconds, or until
    ``pause`` (an event) is set (a slow provider: a stop must cut it).
    ``fail(error)`` queues a failure. ``history`` records what each call was sent. With
    the script empty it answers ``answer(messages)``, or "ok". With a ``gate`` (an event)
    each call waits for it to be set before its first word: the test holds the slots
    until it has queued what it needs. Both the sync and the async paths follow it.
    """

    script: list[Any] = []
    history: list[list[BaseMessage]] = []
    delay: float = 0.0  # seconds between words
    answer: Callable[[list[BaseMessage]], str] | None = None  # when the script is empty
    gate: threading.Event | None = None  # each call waits for it before answering

    model_config = {"arbitrary_types_allowed": True}

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def enqueue(self, text: str, pause_after: int | None = None,
                pause: float | threading.Event = 30.0) -> ScriptedModel:
        self.script.append(("reply", text, pause_after, pause))
        return self

    def fail(self, error: BaseException) -> ScriptedModel:
        self.script.append(("fail", error))
        return self

    def _next(self, messages: list[BaseMessage]) -> tuple:
        self.history.append(list(messages))
        if self.script:
            return self.script.pop(0)
        return ("reply", self.answer(messages) if self.answer else "ok", None, 0.0)

    @staticmethod
    def _chunk(word: str, last: bool) -> ChatGenerationChunk:
        return ChatGenerationChunk(message=AIMessageChunk(
            content=word, response_metadata={"finish_reason": "stop"} if last else {}))

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        step = self._next(messages)
        if step[0] == "fail":
            raise step[1]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(
            step[1], response_metadata={"finish_reason": "stop"}))])

    def _plan(self, messages) -> Iterator[ChatGenerationChunk | float]:
        """The next reply word by word, with the pauses (seconds) between words; a queued
        failure is raised instead."""
        step = self._next(messages)
        if step[0] == "fail":
            raise step[1]
        _, text, pause_after, pause = step
        words = re.findall(r"\S+\s*", text)
        if pause_after == 0:
            yield pause
        for i, word in enumerate(words):
            yield self._chunk(word, i == len(words) - 1)
            if pause_after is not None and i + 1 == pause_after:
                yield pause
            elif self.delay:
                yield self.delay

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        if self.gate:
            self.gate.wait()
        for item in self._plan(messages):
            if isinstance(item, ChatGenerationChunk):
                yield item
            elif isinstance(item, threading.Event):
                item.wait()
            else:
                time.sleep(item)

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        if self.gate:
            await asyncio.to_thread(self.gate.wait)
        for item in self._plan(messages):
            if isinstance(item, threading.Event):
                await asyncio.to_thread(item.wait)
                continue
            if not isinstance(item, ChatGenerationChunk):
                await asyncio.sleep(item)
                continue
            if run_manager:
                await run_manager.on_llm_new_token(item.text, chunk=item)
            yield item


def scripted_factory(model: ScriptedModel):
    """An agent factory whose every agent answers from ``model``'s script."""

    def build(spec: AgentSpec):
        return create_agent(model, tools=list(DEFAULT_TOOLS),
                            system_prompt=spec.system_prompt or None)

    return build


def first_words(messages: list[BaseMessage]) -> str:
    """An answer that shows which history the model was sent: the first user message of
    it, and how many user messages it holds."""
    asked = [m.text for m in messages if m.type == "human"]
    return f"{asked[0]} ({len(asked)})"
