"""PoolChat configuration: read once, validated, passed in.

Values come from (lowest to highest precedence) the defaults below, a secrets mapping
(Streamlit's ``st.secrets`` or ``.streamlit/secrets.toml``) and environment variables.
A bad value stops start-up with one line naming the variable and what it accepts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from core.limits import MODEL_NAME_MAX_CHARS, PROMPT_MAX_CHARS

SECRETS_FILE = Path(".streamlit") / "secrets.toml"
DEFAULT_DATABASE_URL = "sqlite:///data/poolchat.db"


class ConfigError(ValueError):
    """A configuration value is missing or out of range; the message is one line."""


def _setting(default: Any, allowed: str, **constraints: Any) -> Any:
    return Field(default, json_schema_extra={"allowed": allowed}, **constraints)


class Settings(BaseModel):
    """Every PoolChat setting, with its environment variable name as the field name."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    AGENT_POOL_SIZE: int = _setting(1, "an integer from 1 to 256", ge=1, le=256)
    AGENT_MAX_CONCURRENCY: int = _setting(8, "an integer from 1 to 1000", ge=1, le=1000)
    AGENT_QUEUE_TIMEOUT: float = _setting(
        30.0, "a number of seconds from 0.01 to 3600", ge=0.01, le=3600
    )
    DATABASE_URL: str = _setting(
        DEFAULT_DATABASE_URL, "an SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...)",
        min_length=8,
    )
    SESSION_IDLE_TTL: float = _setting(
        1800.0, "a number of seconds from 1 to 604800", ge=1, le=604800
    )
    MAX_SESSIONS_IN_MEMORY: int = _setting(
        100_000, "an integer from 10 to 10000000", ge=10, le=10_000_000
    )
    SESSION_RETENTION_DAYS: float = _setting(
        0, "a number of days from 0 (keep forever) to 36500", ge=0, le=36500
    )
    HEARTBEAT_STALE_AFTER: float = _setting(
        30.0, "a number of seconds from 1 to 86400", ge=1, le=86400
    )
    HISTORY_MAX_TOKENS: int = _setting(
        4000, "an integer from 100 to 2000000", ge=100, le=2_000_000
    )
    MAX_MESSAGE_CHARS: int = _setting(8000, "an integer from 1 to 1000000", ge=1, le=1_000_000)
    RATE_LIMIT_PER_MINUTE: int = _setting(
        20, "an integer from 0 (no limit) to 10000", ge=0, le=10_000
    )
    STATS_PASSWORD: SecretStr | None = _setting(None, "a password string")
    OPENAI_API_KEY: SecretStr | None = _setting(None, "an API key string")
    OPENAI_BASE_URL: str | None = _setting(
        None, "an http:// or https:// URL", pattern=r"^https?://\S+$"
    )
    CHAT_MODEL: str = _setting("gpt-4o-mini", "a model name", min_length=1,
                                  max_length=MODEL_NAME_MAX_CHARS)
    TEMPERATURE: float = _setting(0.7, "a number from 0 to 2", ge=0, le=2)
    SYSTEM_PROMPT: str = _setting(
        "You are PoolChat, a helpful assistant. Use the tools for arithmetic and the time.",
        f"a text of at most {PROMPT_MAX_CHARS} characters",
        max_length=PROMPT_MAX_CHARS,
    )
    OFFLINE_STREAM_DELAY: float = _setting(
        0.01, "a number of seconds from 0 to 1", ge=0, le=1
    )
    OPENAI_TIMEOUT: float = _setting(60.0, "a number of seconds from 1 to 600", ge=1, le=600)
    OPENAI_MAX_RETRIES: int = _setting(2, "an integer from 0 to 10", ge=0, le=10)

    @property
    def offline(self) -> bool:
        """True when no API key is configured: the shipped offline model answers."""
        return self.OPENAI_API_KEY is None or not self.OPENAI_API_KEY.get_secret_value()


def read_secrets_file(path: Path = SECRETS_FILE) -> dict[str, Any]:
    """Top-level values of a Streamlit secrets file, or nothing if there is none."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return {k: v for k, v in data.items() if not isinstance(v, dict)}


def load_settings(
    environ: Mapping[str, str] | None = None,
    secrets: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Build validated settings; raise ConfigError with one clear line on a bad value."""
    environ = os.environ if environ is None else environ
    secrets = read_secrets_file() if secrets is None else secrets
    names = Settings.model_fields.keys()
    values: dict[str, Any] = {k: v for k, v in secrets.items() if k in names}
    values.update({k: v for k, v in environ.items() if k in names and v != ""})
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, values)) from None


def _describe(exc: ValidationError, values: Mapping[str, Any]) -> str:
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "configuration"
    field = Settings.model_fields.get(name)
    allowed = (field.json_schema_extra or {}).get("allowed", "a valid value") if field else ""
    secret = any(word in name for word in ("KEY", "URL", "PASSWORD"))
    shown = "<hidden>" if secret else repr(values.get(name))
    return f"{name} must be {allowed} (got {shown})"
