"""Errors a user may see: short, readable, never carrying secrets."""

from __future__ import annotations

import openai
from sqlalchemy.exc import SQLAlchemyError

from core.pool import PoolTimeout, ProviderCooldown
from core.run_log import RunEnded
from core.store import StoreError
from core.turns import ReplyCutOff


class MessageRejected(ValueError):
    """The user's message was refused before anything was stored or sent."""


class ChatError(RuntimeError):
    """A turn failed after the user's message was stored; ``str()`` is safe to show."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def describe_error(exc: BaseException) -> ChatError:
    """Turn a provider, pool or database failure into a ChatError a user can act on."""
    if isinstance(exc, ChatError):
        return exc
    if isinstance(exc, ReplyCutOff):
        return ChatError("The model's reply was cut off (the connection dropped). "
                         "What arrived is kept, marked as interrupted. Try again.")
    if isinstance(exc, RunEnded):
        return ChatError("The reply was interrupted. Try again.")
    if isinstance(exc, ProviderCooldown):
        return ChatError(str(exc))
    if isinstance(exc, PoolTimeout):
        return ChatError(f"The assistant is busy: {exc}.")
    if isinstance(exc, openai.AuthenticationError):
        return ChatError("The model provider rejected the API key (401): the app's "
                         "operator must check it (OPENAI_API_KEY, or the member's api_key).",
                         retryable=False)
    if isinstance(exc, openai.PermissionDeniedError):
        return ChatError("The model provider denied access to this model (403).",
                         retryable=False)
    if isinstance(exc, openai.NotFoundError):
        return ChatError("The model provider does not know this model (404): the app's "
                         "operator must check it (CHAT_MODEL, or the member's model).",
                         retryable=False)
    if isinstance(exc, openai.RateLimitError):
        return ChatError("The model provider is rate-limiting requests (429). "
                         "Wait a moment and try again.")
    if isinstance(exc, openai.APITimeoutError):
        return ChatError("The model provider did not answer in time. Try again in a moment.")
    if isinstance(exc, openai.APIConnectionError):
        return ChatError("Could not reach the model provider. Try again in a moment; if it "
                         "goes on, the app's operator must check its address "
                         "(OPENAI_BASE_URL, or the member's base_url).")
    if isinstance(exc, openai.APIStatusError):
        return ChatError(f"The model provider failed with HTTP {exc.status_code}. Try again.")
    if isinstance(exc, (StoreError, SQLAlchemyError)):
        return ChatError("The chat database is unavailable right now. Try again shortly.")
    return ChatError(f"The assistant failed ({type(exc).__name__}). Try again.")
