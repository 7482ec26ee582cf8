"""Who may see the stats: one shared password, compared in constant time."""

from __future__ import annotations

import hmac

from pydantic import SecretStr


def password_matches(given: str | None, password: SecretStr | None) -> bool:
    """True when no password is configured, or ``given`` is it (constant-time compare)."""
    if password is None or not password.get_secret_value():
        return True
    return given is not None and hmac.compare_digest(given.encode(),
                                                     password.get_secret_value().encode())
