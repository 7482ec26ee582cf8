"""Building agents: one factory for the shared pool and for per-session custom agents.

An agent is a LangChain ``create_agent`` graph with no checkpointer: it holds no chat
history (the caller passes it in on every request), so one agent can serve many sessions
and threads at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel

from core.config import MemberConfig, Settings
from core.limits import MODEL_NAME_MAX_CHARS, PROMPT_MAX_CHARS
from core.offline_model import OFFLINE_MODEL_NAME, OfflineChatModel
from core.tools import DEFAULT_TOOLS

Agent = Any  # a compiled LangGraph graph: .invoke / .stream / .ainvoke / .astream
AgentFactory = Callable[["AgentSpec"], Agent]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What makes an agent different from another: model, system prompt, temperature."""

    model: str
    system_prompt: str
    temperature: float

    def __post_init__(self) -> None:
        if not self.model.strip() or len(self.model) > MODEL_NAME_MAX_CHARS:
            raise ValueError(f"The model name must be 1 to {MODEL_NAME_MAX_CHARS} characters.")
        if len(self.system_prompt) > PROMPT_MAX_CHARS:
            raise ValueError(f"The system prompt must be at most {PROMPT_MAX_CHARS:,} "
                             "characters.")
        if not 0 <= self.temperature <= 2:
            raise ValueError("The temperature must be between 0 and 2.")

    @classmethod
    def default(cls, settings: Settings) -> AgentSpec:
        model = (settings.MEMBERS[0].model if settings.MEMBERS
                 else OFFLINE_MODEL_NAME if settings.offline else settings.CHAT_MODEL)
        return cls(model, settings.SYSTEM_PROMPT, settings.TEMPERATURE)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentSpec:
        return cls(str(data["model"]), str(data["system_prompt"]), float(data["temperature"]))


def build_chat_model(settings: Settings, spec: AgentSpec,
                     member: MemberConfig | None = None, routed: bool = False
                     ) -> BaseChatModel:
    """ChatOpenAI for a member or when an API key is configured, else the offline model.

    A pool agent (``routed``) makes no retries of its own: the pool's router handles a
    429 for every session at once and fails over to another member.
    """
    if member is None and (settings.offline or spec.model == OFFLINE_MODEL_NAME):
        return OfflineChatModel(temperature=spec.temperature,
                                stream_delay=settings.OFFLINE_STREAM_DELAY)
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=spec.model,
        temperature=spec.temperature,
        api_key=member.api_key if member else settings.OPENAI_API_KEY,
        base_url=member.base_url if member else settings.OPENAI_BASE_URL,
        timeout=settings.OPENAI_TIMEOUT,  # a number, so the shared HTTP client is reused
        max_retries=0 if routed or member else settings.OPENAI_MAX_RETRIES,
        streaming=True,
        stream_usage=True,  # token counts arrive in the stream's last chunk
    )


def agent_factory_for(settings: Settings, routed: bool = False,
                      member: MemberConfig | None = None) -> AgentFactory:
    """Agents on the real or offline model with the default tools: for the pool
    (``routed``), for one configured member, or for custom agents."""

    def build(spec: AgentSpec) -> Agent:
        return create_agent(
            build_chat_model(settings, spec, member, routed),
            tools=list(DEFAULT_TOOLS),
            system_prompt=spec.system_prompt or None,
        )

    return build
