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


def test_members_are_checked_with_one_line_per_mistake_and_no_key_shown():
    members = [
        {"name": "cloud", "model": "gpt-4o-mini", "api_key": "sk-secret-1",
         "base_url": "ftp://nope"},
        {"name": "cloud", "model": "m", "api_key": "sk-secret-2"},
        {"name": "local", "model": "", "api_key": "sk-secret-3", "weight": 0},
        {"model": "m", "api_key": "sk-secret-4", "colour": "red"},
    ]
    with pytest.raises(ConfigError) as error:
        load_settings(environ={}, secrets={"members": members,
                                           "prices": {"m": {"input": -1}}})
    lines = str(error.value).splitlines()
    assert lines == [
        "members[1] (cloud): base_url must be an http:// or https:// URL",
        "members[2] (cloud): the name is used by another member",
        "members[3] (local): model: string should have at least 1 character (got '')",
        "members[3] (local): weight: input should be greater than 0 (got 0)",
        "members[4]: name is missing",
        "members[4]: colour is not a known setting",
        "prices.m: input: input should be greater than or equal to 0 (got -1)",
        "prices.m: output is missing",
    ]
    assert "sk-secret" not in str(error.value)


def test_members_from_the_secrets_file_replace_the_identical_agents(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[[members]]\nname = "a"\nmodel = "m1"\napi_key = "k"\n'
                       '[[members]]\nname = "b"\nmodel = "m2"\napi_key = "k"\n'
                       'base_url = "http://127.0.0.1:9/v1"\nweight = 2\n'
                       '[prices.m1]\ninput = 1\noutput = 2\n')
    from core.config import read_secrets_file
    settings = load_settings(environ={}, secrets=read_secrets_file(secrets))
    assert [(m.name, m.model, m.weight) for m in settings.MEMBERS] == [("a", "m1", 1.0),
                                                                       ("b", "m2", 2.0)]
    assert settings.PRICES["m1"].output == 2 and not settings.offline
    assert settings.MEMBERS[0].quota() != settings.MEMBERS[1].quota()  # other endpoint
