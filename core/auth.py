"""Who may see the stats: one shared password, compared in constant time, wrong
guesses limited for the whole process, and a browser that gave it lately not asked again."""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from pydantic import SecretStr

GUESS_BURST = 20          # wrong passwords taken at once before the limit applies
GUESSES_PER_MINUTE = 20   # then at most this many a minute, from everybody together
TRUSTED_BROWSERS = 1000   # browsers remembered as having given the password
TRUST_SECONDS = 12 * 3600  # for this long: its other tabs are not asked again


def password_matches(given: str | None, password: SecretStr | None) -> bool:
    """True when no password is configured, or ``given`` is it (constant-time compare)."""
    if password is None or not password.get_secret_value():
        return True
    return given is not None and hmac.compare_digest(given.encode(),
                                                     password.get_secret_value().encode())


class TooManyGuesses(Exception):
    """Too many wrong passwords lately: none is checked for ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many wrong passwords; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


class PasswordGate:
    """The stats password, for the page and the API alike, with wrong guesses limited
    per process (a token bucket): a guesser behind Streamlit's proxy has no address of
    its own to be limited by, so everybody shares the limit. While it holds, the right
    password waits too (20 a minute against a long random password is no attack),
    except from a browser that gave it lately: a guesser cannot lock its admin out.
    A browser is its random, HttpOnly cookie id; trust is kept in this process only (a
    restart, or another replica, asks again).
    """

    def __init__(self, password: SecretStr | None, burst: int = GUESS_BURST,
                 per_minute: float = GUESSES_PER_MINUTE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._password = password
        self._burst, self._rate = burst, per_minute / 60
        self._clock = clock
        self._lock = threading.Lock()
        self._allowance, self._since = float(burst), clock()
        self._trusted: OrderedDict[str, float] = OrderedDict()  # browser: when it gave it

    @property
    def open(self) -> bool:
        """No password is set: everybody sees the stats."""
        return password_matches(None, self._password)

    def trusts(self, browser: str | None) -> bool:
        """``browser`` gave the password in the last ``TRUST_SECONDS``: in any of its
        tabs, the stats open without asking again."""
        if self.open:
            return True
        with self._lock:
            return self._trusted_now(browser, self._clock())

    def _trusted_now(self, browser: str | None, now: float) -> bool:
        given_at = self._trusted.get(browser) if browser is not None else None
        return given_at is not None and now - given_at < TRUST_SECONDS

    def check(self, given: str | None, browser: str | None = None) -> bool:
        """True for the password; False for a wrong one, which is counted. Raises
        TooManyGuesses, without looking at ``given``, while the limit holds, unless
        ``browser`` (its random id) gave the password before."""
        if self.open:
            return True
        if not given:  # nothing tried (an API call without a token)
            return False
        with self._lock:
            now = self._clock()
            self._allowance = min(self._burst,
                                  self._allowance + (now - self._since) * self._rate)
            self._since = now
            if self._allowance < 1 and not self._trusted_now(browser, now):
                raise TooManyGuesses((1 - self._allowance) / self._rate)
            if password_matches(given, self._password):
                if browser is not None:
                    self._trusted[browser] = now
                    self._trusted.move_to_end(browser)
                    if len(self._trusted) > TRUSTED_BROWSERS:
                        self._trusted.popitem(last=False)
                return True
            self._allowance -= 1
            return False
