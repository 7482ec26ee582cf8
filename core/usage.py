"""Usage of each reply (tokens, latency, queue wait, cost) and what operators ask of it:
who and which model uses how much, how fast each pool member answers.

Tokens come from the provider (``usage_metadata``); where a model reports none (the
offline model, or a reply stopped before its usage arrived) they are estimated with
LangChain's approximate counter and marked as estimated. Owners appear only as a short
hash of their browser id.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from sqlalchemy import Engine, case, func, select

from core.config import Price
from core.schema import usage

LATENCY_WINDOW = 1000   # latest replies per member behind the percentiles
RATE_WINDOW = 60.0      # seconds behind "tokens per minute"


def owner_key(owner: str | None) -> str:
    """A short, stable, irreversible stand-in for a browser id."""
    return hashlib.sha256((owner or "").encode()).hexdigest()[:10] if owner else "anonymous"


@dataclass(frozen=True, slots=True)
class Tokens:
    input: int
    output: int
    estimated: bool


def count_tokens(history: Sequence[BaseMessage], produced: Sequence[BaseMessage],
                 partial: str = "") -> Tokens:
    """Tokens of a turn: each model call's reported usage, or an estimate of what it was
    sent (the history and the steps before it) and what it wrote."""
    sent, wrote, estimated = 0, 0, False
    context = list(history)
    for message in produced:
        if isinstance(message, AIMessage):
            reported = message.usage_metadata
            if reported:
                sent += reported["input_tokens"]
                wrote += reported["output_tokens"]
            else:
                estimated = True
                sent += count_tokens_approximately(context)
                wrote += count_tokens_approximately([message])
        context.append(message)
    if partial:  # a reply cut short: it was sent the context and wrote this much
        estimated = True
        sent += count_tokens_approximately(context)
        wrote += count_tokens_approximately([AIMessage(partial)])
    return Tokens(sent, wrote, estimated)


def cost_of(prices: Mapping[str, Price], model: str, tokens: Tokens) -> float | None:
    """Dollars for these tokens, or None when the model has no price."""
    price = prices.get(model)
    if price is None:
        return None
    return (tokens.input * price.input + tokens.output * price.output) / 1_000_000


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` from 0 to 1)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class UsageLog:
    """Reads the usage table (the run log writes it, with each reply's end)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Sums per model, per owner, custom vs pool and per member (in SQL), with
        latency percentiles over each group's latest replies and tokens per minute."""
        now = time.time() if now is None else now
        kind = case((usage.c.custom, "custom agents"), else_="shared pool")
        groups = {"model": usage.c.model, "owner": usage.c.owner, "kind": kind,
                  "member": usage.c.member}
        report: dict[str, Any] = {}
        with self.engine.connect() as conn:
            recent = conn.execute(
                select(usage.c.model, usage.c.owner, kind, usage.c.member, usage.c.ttft,
                       usage.c.total_seconds, usage.c.input_tokens + usage.c.output_tokens,
                       usage.c.finished_at)
                .where(usage.c.status == "complete")  # a failure's time is no latency
                .order_by(usage.c.finished_at.desc()).limit(LATENCY_WINDOW * 4)).fetchall()
            for name, column in [("total", None), *groups.items()]:
                keys = [column] if column is not None else []
                rows = conn.execute(select(*keys, *_SUMS).group_by(*keys)).fetchall()
                found = {(row[0] if keys else "all"): _report(row[len(keys):]) for row in rows}
                for key, entry in found.items():
                    position = list(groups).index(name) if keys else None
                    mine = [r for r in recent if position is None or r[position] == key]
                    entry.update(_latency(mine[:LATENCY_WINDOW], now))
                report[name] = found
        report["total"] = report["total"].get("all", _report((0,) * len(_SUMS)))
        return report


_SUMS = (
    func.count(), func.sum(case((usage.c.status == "interrupted", 1), else_=0)),
    func.coalesce(func.sum(usage.c.input_tokens), 0),
    func.coalesce(func.sum(usage.c.output_tokens), 0),
    func.sum(case((usage.c.estimated, 1), else_=0)), func.sum(usage.c.cost),
    func.coalesce(func.sum(usage.c.queue_seconds), 0.0),
    func.sum(case((usage.c.cost.is_(None), 1), else_=0)),
)


def _report(sums: Sequence[Any]) -> dict[str, Any]:
    replies, errors, sent, wrote, estimated, cost, queue, unpriced = sums
    return {"replies": int(replies or 0), "errors": int(errors or 0),
            "input_tokens": int(sent), "output_tokens": int(wrote),
            "tokens": int(sent) + int(wrote), "estimated_replies": int(estimated or 0),
            "cost": None if cost is None else round(float(cost), 6),
            "unpriced_replies": int(unpriced or 0),  # not in the cost: no price for them
            "queue_seconds": round(float(queue), 3)}


def _latency(rows: Sequence[Any], now: float) -> dict[str, Any]:
    """Percentiles over these replies (newest first), and their tokens in the last minute."""
    ttfts = [r[4] for r in rows if r[4] is not None]
    totals = [r[5] for r in rows]
    recent = sum(r[6] for r in rows if r[7] >= now - RATE_WINDOW)
    return {"ttft_p50": percentile(ttfts, 0.5), "ttft_p95": percentile(ttfts, 0.95),
            "total_p50": percentile(totals, 0.5), "total_p95": percentile(totals, 0.95),
            "tokens_per_minute": recent * 60 / RATE_WINDOW}
