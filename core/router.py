"""Routing one reply through the pool: a 429 cools the member down for everyone and the
request waits its turn again; a connection error, timeout or 5xx is retried once on
another healthy member (or, alone, on the same one) before the user sees an error.

Only a request that produced nothing yet is retried: a reply cut off after its first
words keeps what arrived and is reported as interrupted.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import openai

from core.pool import AgentPool, Lease, Ticket

RATE, REFUSED, TRANSIENT = "rate", "refused", "transient"
DEFAULT_COOLDOWN = 2.0   # seconds, when a 429 says nothing about how long to wait
MAX_COOLDOWN = 300.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def classify(exc: BaseException) -> str | None:
    """What a provider failure means for routing (None: not the member's fault)."""
    if isinstance(exc, openai.RateLimitError):
        return RATE
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return REFUSED
    if isinstance(exc, openai.APIConnectionError):  # a timeout is one too
        return TRANSIENT
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return TRANSIENT
    return None


def retry_after(exc: BaseException, now: datetime | None = None) -> float:
    """Seconds the provider asked us to wait: ``retry-after-ms``, ``Retry-After`` (seconds
    or a date), or the longest ``x-ratelimit-reset-*`` (``1s``, ``6m0s``, ``20ms``)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    seconds: float | None = None
    try:
        if headers.get("retry-after-ms"):
            seconds = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after"):
            value = headers["retry-after"].strip()
            try:
                seconds = float(value)
            except ValueError:
                when = parsedate_to_datetime(value)
                seconds = (when - (now or datetime.now(UTC))).total_seconds()
        else:
            resets = [_duration(v) for k, v in headers.items()
                      if k.lower().startswith("x-ratelimit-reset")]
            seconds = max((r for r in resets if r is not None), default=None)
    except (TypeError, ValueError):
        seconds = None
    if seconds is None or seconds != seconds:  # absent or NaN
        return DEFAULT_COOLDOWN
    return min(MAX_COOLDOWN, max(0.0, seconds))


def _duration(text: str) -> float | None:
    parts = _DURATION.findall(text.strip())
    if not parts:
        return None
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * scale[unit] for number, unit in parts)


Attempt = Callable[[Lease, Callable[[], None]], Awaitable[None]]  # lease, "it answered"


async def route(pool: AgentPool, attempt: Attempt, *, owner: str | None,
                prefer: int | None, fresh: Callable[[], bool],
                on_ticket: Callable[[Ticket | None], Any], max_retries: int,
                counted: bool = True) -> None:
    """Run ``attempt`` on a member, again after a 429 (up to ``max_retries`` times per
    member: a 429 that sends the request on to another member at once spends no wait the
    user was promised) and once more after a member failure, as long as ``fresh()`` says
    nothing was produced.
    ``attempt`` calls its second argument once the member answers (a probe succeeded).
    ``counted`` False: the slot serves another agent (not in the member's figures)."""
    exclude: list[str] = []
    rate_limited: dict[str, int] = {}  # 429s per member
    failed_over = False
    while True:
        ticket = Ticket(counted=counted)
        on_ticket(ticket)
        lease: Lease | None = None
        try:
            async with pool.alease(owner=owner, prefer=prefer, exclude=exclude,
                                   ticket=ticket) as lease:
                on_ticket(None)
                try:
                    await attempt(lease, lambda: pool.report_ok(lease, ticket))
                except Exception as exc:
                    _judge(pool, lease, classify(exc), exc)  # before the slot is handed on
                    raise
            return
        except Exception as exc:
            on_ticket(None)
            kind = classify(exc)
            if lease is None or kind is None or not fresh():
                raise
            if kind == RATE:
                rate_limited[lease.member] = rate_limited.get(lease.member, 0) + 1
                if rate_limited[lease.member] > max_retries:
                    raise
                continue
            if failed_over:
                raise
            failed_over = True
            if pool.can_fail_over(lease.member):
                exclude = [lease.member]
            elif kind == REFUSED or not max_retries:
                raise


def _judge(pool: AgentPool, lease: Lease, kind: str | None, exc: BaseException) -> None:
    """What a failure says about the member, told to the pool while the slot is still
    held: released first, it would go to a waiter who would be sent to the same trouble."""
    if kind == RATE:  # whether or not the reply is retried, everyone else must wait
        lease.outcome = "rate_limited"  # not an error of the member
        pool.cool_down(lease.member, retry_after(exc))
    elif kind is not None:
        pool.report_failure(lease, refused=kind == REFUSED, reason=failure_reason(exc))


def failure_reason(exc: BaseException) -> str:
    """A member's failure in a few words, for the pool view."""
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "connection failed"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__
