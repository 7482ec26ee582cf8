"""Identifiers: unguessable where they guard data, readable where operators see them."""

from __future__ import annotations

import os
import re
import secrets
import socket

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def new_session_id() -> str:
    """192 random bits from ``secrets``, URL-safe."""
    return secrets.token_urlsafe(24)


def is_valid_session_id(value: object) -> bool:
    return isinstance(value, str) and bool(SESSION_ID_PATTERN.match(value))


def new_run_id() -> str:
    """144 random bits, URL-safe."""
    return secrets.token_urlsafe(18)


_live_replicas: set[str] = set()  # ids handed out in this process


def new_replica_id() -> str:
    """Host, process and a random suffix: unique per manager, readable in the stats."""
    replica_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    _live_replicas.add(replica_id)
    return replica_id


def replica_is_gone(replica_id: str, this_replica: str) -> bool:
    """True when ``replica_id`` names a process of this host that no longer runs.

    Another host's replica cannot be checked from here: its runs end when they stop
    being checkpointed. A process with our pid but another id was our predecessor.
    """
    pid_text = replica_id.rsplit("-", 2)[1] if replica_id.count("-") >= 2 else ""
    if replica_id == this_replica or not pid_text.isdigit():
        return False
    if replica_id.rsplit("-", 2)[0] != socket.gethostname():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return replica_id not in _live_replicas
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
