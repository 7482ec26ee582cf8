"""PoolChat configuration: read once, validated, passed in.

Values come from (lowest to highest precedence) the defaults below, a secrets mapping
(Streamlit's ``st.secrets`` or ``.streamlit/secrets.toml``) and environment variables.
A bad value stops start-up with one line naming the variable and what it accepts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from core.limits import MODEL_NAME_MAX_CHARS, PROMPT_MAX_CHARS

SECRETS_FILE = Path(".streamlit") / "secrets.toml"
TABLES = {"members": "MEMBERS", "prices": "PRICES"}  # secrets tables -> settings
DEFAULT_DATABASE_URL = "sqlite:///data/poolchat.db"


class ConfigError(ValueError):
    """A configuration value is missing or out of range; the message is one line."""


class MemberConfig(BaseModel):
    """One pool member from ``[[members]]`` in the secrets: an endpoint, a key, a model."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=40, pattern=r"^[\w .:-]+$")
    model: str = Field(min_length=1, max_length=MODEL_NAME_MAX_CHARS)
    api_key: SecretStr
    base_url: str | None = Field(None, pattern=r"^https?://\S+$")
    max_concurrency: int = Field(8, ge=1, le=1000)
    weight: float = Field(1.0, gt=0, le=1000)

    def quota(self) -> str:
        """Members with the same endpoint and key share one provider rate limit."""
        return account_quota(self.base_url, self.api_key.get_secret_value())


def account_quota(base_url: str | None, api_key: str) -> str:
    """A provider account's name for its rate limit: its endpoint and key, hashed (the
    name is stored and shown; the key never is)."""
    account = f"{base_url or ''}|{api_key}"
    return "q-" + hashlib.sha256(account.encode()).hexdigest()[:16]


class Price(BaseModel):
    """What a model costs, in dollars per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, le=10_000)
    output: float = Field(ge=0, le=10_000)


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
    MAX_RUNS_PER_USER: int = _setting(2, "an integer from 1 to 1000", ge=1, le=1000)
    TAB_SYNC_SECONDS: float = _setting(
        2.0, "a number of seconds from 0 (off) to 3600", ge=0, le=3600
    )
    CUSTOM_MODELS: str = _setting(
        "", "model names separated by commas, or * for any",
        max_length=20 * MODEL_NAME_MAX_CHARS)
    MEMBERS: tuple[MemberConfig, ...] = _setting((), "a list of members")
    PRICES: dict[str, Price] = _setting({}, "a table of prices")

    @field_validator("CUSTOM_MODELS", mode="before")
    @classmethod
    def _list_of_models(cls, value: Any) -> Any:
        """A TOML array is as good as the comma-separated text of an environment."""
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value

    @field_validator("STATS_PASSWORD")
    @classmethod
    def _blank_password_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        """``STATS_PASSWORD = ""`` means no password (stats read-only, no member changes),
        not a password everybody knows that unlocks them."""
        return value if value is not None and value.get_secret_value().strip() else None

    @property
    def offline(self) -> bool:
        """True when no API key nor member is configured: the offline model answers."""
        return not self.MEMBERS and not self.has_key

    @property
    def has_key(self) -> bool:
        return self.OPENAI_API_KEY is not None and bool(self.OPENAI_API_KEY.get_secret_value())

    @property
    def chats_may_have_own_agents(self) -> bool:
        """A chat's own settings need an account to answer with: ``OPENAI_API_KEY`` (with
        members, theirs are the pool's), or the offline model."""
        return self.offline or self.has_key


def read_secrets_file(path: Path = SECRETS_FILE) -> dict[str, Any]:
    """Top-level values of a Streamlit secrets file, or nothing if there is none."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return {k: v for k, v in data.items() if not isinstance(v, dict) or k in TABLES}


def load_settings(
    environ: Mapping[str, str] | None = None,
    secrets: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Build validated settings; raise ConfigError with one clear line on a bad value."""
    environ = os.environ if environ is None else environ
    secrets = read_secrets_file() if secrets is None else secrets
    names = Settings.model_fields.keys()
    values: dict[str, Any] = {TABLES.get(k, k): v for k, v in secrets.items()
                              if TABLES.get(k, k) in names}
    values.update({k: v for k, v in environ.items() if k in names and v != ""
                   and k not in TABLES.values()})
    values.update(overrides)
    table_errors = _check_tables(values)
    if table_errors:
        raise ConfigError("\n".join(table_errors))
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, values)) from None


def _check_tables(values: Mapping[str, Any]) -> list[str]:
    """One line per mistake in ``[[members]]`` and ``[prices]``; a key is never shown."""
    errors: list[str] = []
    members = values.get("MEMBERS", ())
    if not isinstance(members, (list, tuple)):
        return ["members must be a TOML array of tables ([[members]])"]
    seen: set[str] = set()
    for number, member in enumerate(members, 1):
        label = f"members[{number}]"
        if not isinstance(member, Mapping):
            errors.append(f"{label} must be a table with name, model, api_key")
            continue
        label = f"members[{number}] ({member.get('name')!s:.40})" if member.get("name") \
            else label
        name = member.get("name")
        if isinstance(name, str) and name.strip():
            if name.strip() in seen:
                errors.append(f"{label}: the name is used by another member")
            seen.add(name.strip())
        try:
            MemberConfig(**member)
        except ValidationError as exc:
            errors += [f"{label}: {_field_problem(e)}" for e in exc.errors()]
    prices = values.get("PRICES", {})
    if not isinstance(prices, Mapping):
        return [*errors, "prices must be a table of models ([prices.\"model\"])"]
    for model, price in prices.items():
        try:
            Price(**price) if isinstance(price, Mapping) else Price.model_validate(price)
        except ValidationError as exc:
            errors += [f"prices.{model}: {_field_problem(e)}" for e in exc.errors()]
    return errors


def _field_problem(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "value"
    if error["type"] == "missing":
        return f"{field} is missing"
    if error["type"] == "extra_forbidden":
        return f"{field} is not a known setting"
    if error["type"] == "string_pattern_mismatch":
        return f"{field} must be " + ("an http:// or https:// URL" if field == "base_url"
                                      else "letters, digits, spaces, '.', ':' or '-'")
    shown = "" if any(w in field for w in ("key", "url")) else f" (got {error.get('input')!r:.40})"
    return f"{field}: {error['msg'].lower()}{shown}"


def _describe(exc: ValidationError, values: Mapping[str, Any]) -> str:
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "configuration"
    field = Settings.model_fields.get(name)
    allowed = (field.json_schema_extra or {}).get("allowed", "a valid value") if field else ""
    secret = any(word in name for word in ("KEY", "URL", "PASSWORD"))
    shown = "<hidden>" if secret else repr(values.get(name))
    return f"{name} must be {allowed} (got {shown})"
