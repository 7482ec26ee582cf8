"""A provider's 429 seen by one replica, honoured by all: each cooldown is stored in the
``cooldowns`` table and every replica reads the table once a second.

A replica may send one request in the second before it learns of another's cooldown;
after that none does until the cooldown ends.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import Engine, case, select
from sqlalchemy.dialects import postgresql, sqlite

from core.pool import AgentPool
from core.runs import RunWorker
from core.schema import cooldowns

log = logging.getLogger("poolchat")

FOLLOW_EVERY = 1.0  # seconds between reads of other replicas' cooldowns


class SharedCooldowns:
    """Publishes the pools' cooldowns and applies the other replicas' ones.

    Pools here share a cooldown too: a quota (endpoint and key) may serve in more than
    one (the members, and the chats with settings of their own)."""

    def __init__(self, pools: list[AgentPool], engine: Engine, worker: RunWorker) -> None:
        self.pools, self.engine, self.worker = pools, engine, worker
        for pool in pools:
            pool.on_cooldown = self._share
        self._following = worker.submit(self._follow())

    def _share(self, quota: str, until: float) -> None:
        """Apply a 429 seen here to this replica's other pools, and store it, off the
        caller's thread (the run's event loop)."""
        for pool in self.pools:
            pool.apply_cooldowns({quota: until})  # no change where it is already known
        loop = self.worker.loop
        loop.call_soon_threadsafe(loop.run_in_executor, None, self._save, quota, until)

    def _save(self, quota: str, until: float) -> None:
        try:
            self.save(quota, until)
        except Exception:  # noqa: BLE001 - a database outage: this replica still waits
            log.warning("could not share a provider cooldown", exc_info=True)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_EVERY)
            try:
                found = await asyncio.to_thread(self.active)
            except Exception:  # noqa: BLE001 - a database outage must not end the loop
                continue
            if found:
                for pool in self.pools:
                    pool.apply_cooldowns(found)

    def save(self, quota: str, until: float) -> None:
        """Keep the later of this cooldown and one another replica stored."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(cooldowns).values(quota=quota, until=until)
        statement = statement.on_conflict_do_update(
            index_elements=[cooldowns.c.quota],
            set_={"until": case((statement.excluded.until > cooldowns.c.until,
                                 statement.excluded.until), else_=cooldowns.c.until)})
        with self.engine.begin() as conn:
            conn.execute(statement)

    def active(self, now: float | None = None) -> dict[str, float]:
        """Cooldowns not yet over: quota -> wall-clock end."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            return dict(conn.execute(select(cooldowns.c.quota, cooldowns.c.until)
                                     .where(cooldowns.c.until > now)).fetchall())
