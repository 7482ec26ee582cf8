"""Configuration is read once, validated, and a bad value is one clear line."""

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_run_offline_with_one_shared_agent():
    settings = load_settings(environ={}, secrets={})
    assert settings.AGENT_POOL_SIZE == 1
    assert settings.offline
    assert settings.DATABASE_URL.startswith("sqlite:///")


@pytest.mark.parametrize("value", ["abc", "0", "-1", "100000", "1.5"])
def test_bad_pool_size_names_the_variable_and_range(value):
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"AGENT_POOL_SIZE": value}, secrets={})
    message = str(error.value)
    assert message.startswith("AGENT_POOL_SIZE must be an integer from 1 to 256")
    assert repr(value) in message
    assert "\n" not in message


@pytest.mark.parametrize("name,value", [
    ("AGENT_MAX_CONCURRENCY", "0"), ("AGENT_QUEUE_TIMEOUT", "never"),
    ("SESSION_IDLE_TTL", "-5"), ("HISTORY_MAX_TOKENS", "10"), ("MAX_MESSAGE_CHARS", "x"),
    ("TEMPERATURE", "3"), ("OPENAI_TIMEOUT", "0"), ("OPENAI_MAX_RETRIES", "11"),
    ("OPENAI_BASE_URL", "localhost:11434"), ("CHAT_MODEL", ""),
])
def test_every_bad_value_is_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=f"^{name} must be "):
        load_settings(environ={}, secrets={name: value})


def test_environment_overrides_secrets():
    settings = load_settings(environ={"AGENT_POOL_SIZE": "4"},
                             secrets={"AGENT_POOL_SIZE": 2, "CHAT_MODEL": "llama3"})
    assert settings.AGENT_POOL_SIZE == 4
    assert settings.CHAT_MODEL == "llama3"


def test_secrets_file_is_read_when_no_secrets_are_given(tmp_path, monkeypatch):
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('OPENAI_API_KEY = "sk-file"\n')
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert not settings.offline
    assert settings.OPENAI_API_KEY.get_secret_value() == "sk-file"


def test_secrets_never_appear_in_errors_or_reprs():
    settings = load_settings(environ={"OPENAI_API_KEY": "sk-very-secret"}, secrets={})
    assert "sk-very-secret" not in repr(settings)
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"OPENAI_BASE_URL": "ftp://sk-very-secret@x"}, secrets={})
    assert "sk-very-secret" not in str(error.value)


def test_a_bad_value_stops_start_up_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "core.check_config"],
                            env={"AGENT_POOL_SIZE": "abc", "PATH": ""},
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "AGENT_POOL_SIZE must be an integer from 1 to 256 (got 'abc')"]


NUMERIC = [name for name, field in Settings.model_fields.items()
           if field.annotation in (int, float)]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["abc", "", "1e12", "-5", "nan"])
def test_every_numeric_setting_refuses_wrong_types_and_out_of_range(name, value):
    if value == "":
        assert load_settings(environ={name: value}, secrets={})  # empty means default
        return
    with pytest.raises(ConfigError, match=f"^{name} must be "):
        load_settings(environ={name: value}, secrets={})


@pytest.mark.parametrize("override", [{"AGENT_POOL_SIZE": "abc"},
                                      {"AGENT_MAX_CONCURRENCY": 0},
                                      {"OPENAI_BASE_URL": "ftp://x"}])
def test_overrides_given_to_the_manager_are_validated_like_the_environment(override):
    from core import ChatbotSessionManager

    with pytest.raises(ConfigError, match=next(iter(override))):
        ChatbotSessionManager(settings=Settings(), **override)


def test_a_valid_override_keeps_the_other_settings_and_secrets():
    from pydantic import SecretStr

    from core import ChatbotSessionManager

    base = Settings(DATABASE_URL="sqlite://", STATS_PASSWORD=SecretStr("pw"))
    manager = ChatbotSessionManager(settings=base, AGENT_POOL_SIZE=3)
    try:
        assert manager.pool.size == 3
        assert manager.settings.STATS_PASSWORD.get_secret_value() == "pw"
    finally:
        manager.close()
