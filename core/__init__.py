"""PoolChat's core: chat sessions over a shared agent pool, with no UI dependency."""

from core.agents import AgentSpec
from core.config import ConfigError, Settings, load_settings
from core.errors import ChatError, MessageRejected
from core.sessions import ChatbotSession, ChatbotSessionManager

__all__ = ["AgentSpec", "ChatError", "ChatbotSession", "ChatbotSessionManager",
           "ConfigError", "MessageRejected", "Settings", "load_settings"]
