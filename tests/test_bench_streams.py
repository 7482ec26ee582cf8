"""The streaming benchmark keeps working: one 100-token reply through the real app and
through the plain page, read by raw websocket clients, and its JSON.

This asserts structure, never speed: speed is measured by `python -m bench.streams`.
"""

import json

from bench import streams
from bench.rate_server import parse_request, reply_text


def test_the_rate_server_streams_recognisable_tokens_in_paragraphs():
    text = reply_text(85)
    assert text.startswith("w1 w2 ") and text.endswith(" w85")
    assert text.count("\n\n") == 2 and "w40\n\nw41" in text
    assert streams.last_token(text) == 85
    assert parse_request("tokens=500 rate=30 id=app-1") == (500, 30.0, "app-1")
    assert streams.last_token("tokens=500 rate=30 id=app-1") == 0


def test_a_quick_single_stream_completes_on_the_app_and_the_plain_page(tmp_path):
    out = tmp_path / "streams.json"
    results = streams.run(True, sizes=[100], concurrency=[], runs=1, out=out,
                          log=lambda line: None)
    (row,) = results["single"]
    for name in ("app", "plain"):
        stream = row[name]
        assert stream["complete"] == 1, (name, stream["errors"])
        assert stream["all_tokens_seen"], name
        assert stream["bytes"] > 0 and stream["ws_messages"] > 0, name
    data = json.loads(out.read_text())
    assert {"single", "concurrent", "targets"} <= set(data)
    assert {t["key"] for t in data["targets"]} == {
        "reply_bytes_vs_plain", "reply_cpu_vs_plain", "first_token", "concurrent_lag_p99"}
    assert all("pass" in t and "value" in t for t in data["targets"])
