"""Exports keep every message, tool step and status; user text cannot inject Markdown."""

import json

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.export import conversation_json, conversation_markdown

ROWS = [
    (HumanMessage("what is 12*7? <b>[x](javascript:alert(1))</b>"), "complete"),
    (AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "12*7"},
                                "id": "c1"}]), "complete"),
    (ToolMessage("84", tool_call_id="c1", name="calculator"), "complete"),
    (AIMessage("12*7 = 84"), "complete"),
    (AIMessage("Once upon"), "stopped"),
]


def test_json_export_round_trips_every_message():
    data = json.loads(conversation_json("Sums", ROWS))
    assert data["title"] == "Sums"
    assert [m["role"] for m in data["messages"]] == ["human", "ai", "tool", "ai", "ai"]
    assert data["messages"][1]["tool_calls"] == [{"name": "calculator",
                                                  "args": {"expression": "12*7"}}]
    assert data["messages"][-1]["status"] == "stopped"


def test_markdown_export_is_a_readable_transcript():
    text = conversation_markdown("Sums", ROWS)
    assert text.startswith("# Sums\n")
    assert "`calculator({\"expression\": \"12*7\"})`" in text
    assert "**Assistant**:\n\n12*7 = 84" in text
    assert "**Assistant** *(stopped)*:" in text


def test_user_text_is_quoted_as_code_in_markdown():
    text = conversation_markdown("t", ROWS[:1])
    assert "    what is 12*7? <b>[x](javascript:alert(1))</b>" in text
