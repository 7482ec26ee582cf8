"""Agents: a spec names what makes one different, and the factory builds the model the
configuration asks for, without reaching any provider."""

import pytest
from langchain_openai import ChatOpenAI

from core.agents import AgentSpec, build_chat_model
from core.config import load_settings
from core.limits import MODEL_NAME_MAX_CHARS, PROMPT_MAX_CHARS
from core.offline_model import OfflineChatModel


@pytest.mark.parametrize("spec,problem", [
    (("", "p", 0.5), "model name"), (("m" * (MODEL_NAME_MAX_CHARS + 1), "p", 0.5), "model name"),
    (("m", "p" * (PROMPT_MAX_CHARS + 1), 0.5), "system prompt"), (("m", "p", 2.5), "temperature"),
])
def test_a_bad_spec_is_refused_with_a_clear_reason(spec, problem):
    with pytest.raises(ValueError, match=problem):
        AgentSpec(*spec)


def test_a_spec_round_trips_through_its_stored_form():
    spec = AgentSpec("llama3", "Be brief.", 0.3)
    assert AgentSpec.from_dict(spec.to_dict()) == spec


def test_without_a_key_the_offline_model_answers():
    settings = load_settings(environ={}, secrets={})
    assert isinstance(build_chat_model(settings, AgentSpec.default(settings)), OfflineChatModel)


def test_with_a_key_the_provider_model_gets_the_configured_timeout_and_retries():
    settings = load_settings(environ={"OPENAI_API_KEY": "sk-x", "OPENAI_TIMEOUT": "7",
                                      "OPENAI_MAX_RETRIES": "1",
                                      "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, secrets={})
    model = build_chat_model(settings, AgentSpec("gpt-x", "", 0.2))
    assert isinstance(model, ChatOpenAI)
    assert (model.model_name, model.request_timeout, model.max_retries) == ("gpt-x", 7.0, 1)
    assert isinstance(model.request_timeout, float)  # a number keeps the shared client
