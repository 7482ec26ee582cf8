"""What one turn sends to the model: the newest history within budget, well formed."""

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.turns import TurnResult, model_input, well_formed

CALL = {"name": "calculator", "args": {"expression": "1+1"}, "id": "c1"}


def test_a_tool_call_left_without_its_result_is_not_sent():
    history = [HumanMessage("1+1?"), AIMessage("", tool_calls=[CALL]), HumanMessage("hi")]
    assert well_formed(history) == [history[0], history[2]]


def test_a_reply_stopped_before_its_first_word_is_not_sent():
    history = [HumanMessage("hi"), AIMessage(""), HumanMessage("again")]
    assert well_formed(history) == [history[0], history[2]]


def test_a_complete_tool_step_is_kept_in_order():
    history = [HumanMessage("1+1?"), AIMessage("", tool_calls=[CALL]),
               ToolMessage("2", tool_call_id="c1"), AIMessage("2")]
    assert well_formed(history) == history


def test_the_budget_keeps_the_newest_messages_starting_on_a_user_message():
    history = []
    for i in range(50):
        history += [HumanMessage(f"question {i} " * 10), AIMessage(f"answer {i} " * 10)]
    sent = model_input(history, max_tokens=200)
    assert isinstance(sent[0], HumanMessage)
    assert sent[-1] is history[-1] and len(sent) < len(history)


def test_a_reply_without_a_finish_reason_was_cut_off():
    done = TurnResult(messages=[AIMessage("Hello wor")])
    assert done.cut_off() and done.partial == ["Hello wor"] and done.messages == []
    finished = TurnResult(messages=[AIMessage("Hi", response_metadata={"finish_reason": "stop"})])
    assert not finished.cut_off() and finished.reply == "Hi"
