"""The recent-history cache is bounded by the messages it holds, oldest sessions first."""

from langchain_core.messages import HumanMessage

from core.recent import Recent, RecentHistory


def entry(count: int, last_id: int) -> Recent:
    recent = Recent(None)
    recent.extend([HumanMessage(f"m{i}") for i in range(count)], last_id, window=100)
    return recent


def test_it_holds_at_most_max_messages_dropping_the_least_recent_session():
    cache = RecentHistory(max_messages=25)
    for name in ("a", "b", "c"):
        cache.put(name, entry(10, 1))
    assert cache.held == 20
    assert cache.take("a") is None
    assert cache.take("c").last_id == 1


def test_an_entry_keeps_only_the_window_with_token_estimates():
    recent = entry(150, 7)
    assert len(recent.messages) == len(recent.tokens) == 100
    assert recent.messages[0].text == "m50"
    assert all(t > 0 for t in recent.tokens)
