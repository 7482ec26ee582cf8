"""Schema history: small functions applied in order, each recorded once.

A blank database and an old one are handled alike: ``migrate`` runs whatever has not been
applied yet, inside one transaction per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Column, Float, MetaData, String, Table, select
from sqlalchemy.engine import Connection, Engine

Migration = Callable[[Connection, MetaData], None]

_tracking = MetaData()
schema_migrations = Table(
    "schema_migrations",
    _tracking,
    Column("name", String(100), primary_key=True),
    Column("applied_at", Float, nullable=False),
)


def m001_initial(conn: Connection, metadata: MetaData) -> None:
    """Sessions and messages as declared in ``core.store``."""
    for name in ("sessions", "messages"):
        metadata.tables[name].create(conn, checkfirst=True)


MIGRATIONS: list[Migration] = [m001_initial]


def applied(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(
            select(schema_migrations.c.name).order_by(schema_migrations.c.name))]


def migrate(engine: Engine, metadata: MetaData) -> list[str]:
    """Apply missing migrations; returns the names applied now. Running it twice is a no-op."""
    _tracking.create_all(engine, checkfirst=True)
    done = set(applied(engine))
    ran = []
    for step in MIGRATIONS:
        if step.__name__ in done:
            continue
        with engine.begin() as conn:
            step(conn, metadata)
            conn.execute(schema_migrations.insert().values(name=step.__name__,
                                                           applied_at=time.time()))
        ran.append(step.__name__)
    return ran
