"""Exports keep every message, tool step and status; user text cannot inject Markdown."""

import json

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.export import conversation_json, conversation_markdown
from core.store import StoredMessage

NOON = 1_795_608_000.0  # 2026-11-25 12:00:00 UTC


def row(message, status="complete", model=None, score=None):
    return StoredMessage(0, message, status, NOON, model, False, score, "")


ROWS = [
    row(HumanMessage("what is 12*7? <b>[x](javascript:alert(1))</b>")),
    row(AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "12*7"},
                                   "id": "c1"}]), model="gpt-x"),
    row(ToolMessage("84", tool_call_id="c1", name="calculator")),
    row(AIMessage("12*7 = 84"), model="gpt-x", score=1),
    row(AIMessage("Once upon"), "stopped", model="gpt-x"),
]


def test_json_export_round_trips_every_message():
    data = json.loads(conversation_json("Sums", ROWS))
    assert data["title"] == "Sums"
    assert [m["role"] for m in data["messages"]] == ["human", "ai", "tool", "ai", "ai"]
    assert data["messages"][1]["tool_calls"] == [{"name": "calculator",
                                                  "args": {"expression": "12*7"}}]
    assert data["messages"][-1]["status"] == "stopped"
    assert data["messages"][3]["created_at"] == "2026-11-25T12:00:00+00:00"
    assert data["messages"][3]["model"] == "gpt-x"
    assert data["messages"][3]["feedback"] == {"score": "up", "comment": ""}


def test_markdown_export_is_a_readable_transcript():
    text = conversation_markdown("Sums", ROWS)
    assert text.startswith("# Sums\n")
    assert "**Tool call:**\n\n```\ncalculator({\"expression\": \"12*7\"})\n```" in text
    assert "**Tool calculator** returned:\n\n```\n84\n```" in text
    assert "**Assistant** · 2026-11-25 12:00:00 UTC, gpt\\-x:\n\n12*7 = 84" in text
    assert ("**Assistant** *(stopped: partial reply)* · 2026-11-25 12:00:00 UTC, gpt\\-x:"
            in text)


def test_a_reply_still_being_written_is_marked_partial_in_the_markdown():
    text = conversation_markdown("Sums", [*ROWS[:1], row(AIMessage("Once"), "running")])
    assert "**Assistant** *(still being written: partial reply)* ·" in text


def test_backticks_in_a_tool_step_cannot_end_its_code_block():
    """The model chooses a tool's arguments: they must not turn into Markdown (an image
    loaded by whoever opens the file)."""
    sneaky = '1` ![t](http://evil.example/t.png) `'
    text = conversation_markdown("Sums", [
        row(AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": sneaky},
                                       "id": "c1"}])),
        row(ToolMessage("``` ![t](http://evil.example/r.png)", tool_call_id="c1",
                        name="calculator"))])
    blocks = text.split("**Tool")
    assert '```\ncalculator({"expression": "1` ![t]' in blocks[1]
    assert "````\n``` ![t](http://evil.example/r.png)\n````" in blocks[2]


def test_user_text_is_quoted_as_code_in_markdown():
    text = conversation_markdown("t", ROWS[:1])
    assert "    what is 12*7? <b>[x](javascript:alert(1))</b>" in text
