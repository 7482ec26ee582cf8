"""The stats password: constant-time compare, wrong guesses limited for the process."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from core.auth import PasswordGate, TooManyGuesses


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_guesses_run_out_then_come_back_one_every_three_seconds():
    clock = Clock()
    gate = PasswordGate(SecretStr("s3cret-pass"), burst=3, per_minute=20, clock=clock)
    assert gate.check("s3cret-pass") and gate.check("s3cret-pass")  # the right one is free
    assert [gate.check(g) for g in ("a", "b", "c")] == [False, False, False]
    with pytest.raises(TooManyGuesses) as busy:
        gate.check("s3cret-pass")  # not even looked at while the limit holds
    assert busy.value.retry_after == pytest.approx(3)
    clock.now += 3
    assert gate.check("d") is False
    with pytest.raises(TooManyGuesses):
        gate.check("e")
    clock.now += 3600  # an idle hour gives back the burst, no more
    assert [gate.check(g) for g in ("f", "g", "h")] == [False, False, False]
    with pytest.raises(TooManyGuesses):
        gate.check("s3cret-pass")


def test_no_token_is_no_guess_and_no_password_is_an_open_gate():
    gate = PasswordGate(SecretStr("s3cret-pass"), burst=1, clock=Clock())
    assert [gate.check(None), gate.check(""), gate.check(None)] == [False] * 3
    assert gate.check("s3cret-pass")  # the burst of one is still there
    assert not gate.open
    for password in (None, SecretStr("")):
        assert PasswordGate(password).open and PasswordGate(password).check(None)


def test_a_browser_that_gave_the_password_is_not_locked_out_by_guessers():
    """One wrong guess every 3 s would keep the limit on for good: the admin's browser,
    having given the password before, still gets in; any other waits."""
    clock = Clock()
    gate = PasswordGate(SecretStr("s3cret-pass"), burst=2, per_minute=20, clock=clock)
    assert gate.check("s3cret-pass", browser="admin-browser")
    assert [gate.check("a"), gate.check("b")] == [False, False]  # the guessers
    for _ in range(100):
        clock.now += 3
        assert gate.check("wrong") is False  # one guess every 3 s
        assert gate.check("s3cret-pass", browser="admin-browser")
        with pytest.raises(TooManyGuesses):
            gate.check("s3cret-pass", browser="another-browser")


def test_a_browser_that_gave_the_password_is_trusted_in_other_tabs_for_a_while():
    """A second tab of the browser (the same cookie id) is not asked again; another
    browser is; after ``TRUST_SECONDS`` the browser is asked again."""
    from core.auth import TRUST_SECONDS

    clock = Clock()
    gate = PasswordGate(SecretStr("s3cret-pass"), clock=clock)
    assert not gate.trusts("admin-browser") and not gate.trusts(None)
    assert gate.check("wrong", browser="admin-browser") is False
    assert not gate.trusts("admin-browser")  # a wrong password earns nothing
    assert gate.check("s3cret-pass", browser="admin-browser")
    assert gate.trusts("admin-browser")
    assert not gate.trusts("another-browser") and not gate.trusts(None)
    clock.now += TRUST_SECONDS - 1
    assert gate.trusts("admin-browser")
    clock.now += 1
    assert not gate.trusts("admin-browser")
    assert PasswordGate(None).trusts(None)  # no password: nothing to ask
