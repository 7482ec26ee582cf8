"""Fakes that plug in where real parts do: at the agent factory, never the provider client."""

from __future__ import annotations

from collections.abc import Callable

from langchain.agents import create_agent

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

    def _stream(self, *args, **kwargs):
        raise self.error


class ObservedModel(OfflineChatModel):
    """An offline model that calls ``observe(messages)`` before answering."""

    observe: Callable

    def _generate(self, messages, *args, **kwargs):
        self.observe(messages)
        return super()._generate(messages, *args, **kwargs)

    def _stream(self, messages, *args, **kwargs):
        self.observe(messages)
        yield from super()._stream(messages, *args, **kwargs)


def observed_factory(observe: Callable):
    def build(spec: AgentSpec):
        return create_agent(ObservedModel(observe=observe), tools=list(DEFAULT_TOOLS),
                            system_prompt=spec.system_prompt or None)

    return build
