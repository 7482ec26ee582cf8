"""The two designs under test.

The old design is the seed's "before": every session builds its own agent,
``create_agent(ChatOpenAI(...), tools=...)`` with a fake key (nothing is ever sent), and
keeps its history in memory. The new design is ``core``: one pool, sessions as ids.
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import BaseMessage, HumanMessage

from core.tools import DEFAULT_TOOLS


class PerSessionAgentSession:
    """The seed's old session: its own agent and its own in-memory history."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.history: list[BaseMessage] = []

    def send(self, text: str) -> str:
        self.history.append(HumanMessage(text))
        result = self.agent.invoke({"messages": self.history})
        self.history = list(result["messages"])
        return self.history[-1].text


def openai_agent() -> Any:
    """A real ChatOpenAI agent with a fake key and a loopback URL: built, never called."""
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="gpt-4o-mini", api_key="sk-bench-fake",
                       base_url="http://127.0.0.1:9/v1", timeout=5, max_retries=0)
    return create_agent(model, tools=list(DEFAULT_TOOLS))


def old_session() -> PerSessionAgentSession:
    return PerSessionAgentSession(openai_agent())
