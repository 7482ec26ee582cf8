"""The shipped offline model drives the real agent loop, honestly and deterministically."""

import re

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.offline_model import OFFLINE_HELP, OfflineChatModel
from core.tools import DEFAULT_TOOLS, calculator, evaluate


@pytest.fixture
def agent():
    return create_agent(OfflineChatModel(), tools=list(DEFAULT_TOOLS))


def run(agent, *texts):
    history = []
    for text in texts:
        history = agent.invoke({"messages": [*history, HumanMessage(text)]})["messages"]
    return history


def test_arithmetic_goes_through_the_calculator_tool(agent):
    history = run(agent, "what is 12*7?")
    call, result, answer = history[1:]
    assert call.tool_calls[0]["name"] == "calculator"
    assert call.tool_calls[0]["args"] == {"expression": "12*7"}
    assert isinstance(result, ToolMessage) and result.text == "84"
    assert "84" in answer.text


def test_an_expression_amid_other_text_still_uses_the_calculator(agent):
    history = run(agent, "Hi! I was wondering, could you tell me (3 + 4) * 2 please")
    assert history[1].tool_calls[0]["args"] == {"expression": "(3 + 4) * 2"}
    assert history[-1].text.endswith("= 14")


def test_the_time_goes_through_the_clock_tool(agent):
    history = run(agent, "What time is it?")
    assert history[1].tool_calls[0]["name"] == "current_time"
    assert re.fullmatch(r"It is \w+day \d{1,2} \w+ 20\d\d, \d\d:\d\d UTC\.",
                        history[-1].text)  # readable, not raw ISO


def test_it_recalls_a_name_from_this_history_only(agent):
    history = run(agent, "My name is Lin Ortega.", "What is my name?")
    assert history[-1].text == "Your name is Lin Ortega."
    fresh = run(agent, "What is my name?")
    assert "haven't told me" in fresh[-1].text


def test_anything_else_gets_an_honest_offline_notice(agent):
    history = run(agent, "Write me a poem about the sea")
    assert history[-1].text == OFFLINE_HELP
    assert "not an LLM" in OFFLINE_HELP and "OPENAI_API_KEY" in OFFLINE_HELP


def test_replies_are_deterministic():
    model = OfflineChatModel()
    messages = [HumanMessage("My name is Ada."), AIMessage("hi"), HumanMessage("who am i")]
    assert model.invoke(messages).text == model.invoke(messages).text == "Your name is Ada."


def test_streaming_yields_the_reply_in_pieces():
    chunks = list(OfflineChatModel().stream([HumanMessage("hello")]))
    assert len(chunks) > 3
    assert "".join(c.text for c in chunks) == OFFLINE_HELP
    whole = sum(chunks[1:], chunks[0])
    assert whole.response_metadata["finish_reason"] == "stop"


def test_binding_tools_shares_the_model_as_provider_models_do():
    model = OfflineChatModel()
    bound = model.bind_tools(DEFAULT_TOOLS)
    assert bound.bound is model  # no copy per agent turn
    assert bound.invoke([HumanMessage("what is 2+2")]).tool_calls[0]["name"] == "calculator"
    assert model.invoke([HumanMessage("what is 2+2")]).text == OFFLINE_HELP


def test_without_bound_tools_arithmetic_is_not_faked():
    reply = OfflineChatModel().invoke([HumanMessage("what is 2+2")])
    assert not reply.tool_calls and reply.text == OFFLINE_HELP


@pytest.mark.parametrize("expression,result", [
    ("12*7", "84"), ("2**10", "1024"), ("7/2", "3.5"), ("-(3+4)", "-7"), ("2^3", "8"),
    ("1/0", "error: division by zero"), ("__import__('os')", None), ("9**9999", None),
    ("(2**50)**2", str(2**100)),
])
def test_the_calculator_only_evaluates_arithmetic(expression, result):
    answer = calculator.invoke({"expression": expression})
    if result is None:
        assert answer.startswith("error:")
    else:
        assert answer == result


@pytest.mark.parametrize("expression", [
    "(9**99)**99",  # each exponent small, the result 31,000 bits
    "((((9**99)**99)**99)**99)**99",  # held the server for minutes
    "(9**99)**99 - 1", "(2**99)**99 * 2**99 * 2**99", "(2**99*2**99)*(2**99*2**99)*(9**99)**40",
])
def test_the_calculator_refuses_results_too_large_before_computing_them(expression):
    assert calculator.invoke({"expression": expression}) == "error: result too large"


def test_evaluate_refuses_names_and_calls():
    with pytest.raises(ValueError):
        evaluate("abs(-1)")


def test_calculators_parse_safely_while_a_page_is_compiled_in_another_thread(monkeypatch):
    """Python 3.11 counts the depth of every tree it builds in one counter per process:
    parsed at once in two threads, while garbage with finalizers is collected (which
    lets another thread run mid-parse), one of them failed with "SystemError: AST
    constructor recursion depth mismatch" (an AppTest, 1 run in 8, the calculator's
    reply failing). Once the app serialized parsing, none fails."""
    import ast
    import gc
    import sys
    import threading
    from pathlib import Path

    from core.tools import serialize_parsing

    monkeypatch.setattr(ast, "parse", ast.parse)  # put back after the test
    serialize_parsing()
    page = (Path(__file__).parent.parent / "pages" / "chat.py").read_text()
    failures = []

    class Finalized:
        def __del__(self):
            pass

    def garbage():
        for _ in range(30_000):
            cycle = Finalized()
            cycle.itself = cycle

    def compile_pages():
        for _ in range(10):
            try:
                ast.parse(page)
            except SystemError as exc:
                failures.append(exc)

    def calculate():
        for _ in range(5_000):
            try:
                evaluate("12*7")
            except SystemError as exc:
                failures.append(exc)

    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-5)
    gc.set_threshold(100, 5, 5)
    try:
        threads = [threading.Thread(target=t) for t in (garbage, compile_pages, calculate)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)
    assert failures == []
