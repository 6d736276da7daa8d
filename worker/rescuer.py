"""Rescues running jobs whose lease expired (their worker died, hung, or lost
the network): each counts as a failed attempt, retried or dead-lettered.

"""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.worker.isolation import SetAside, refused
from sluice.worker.retrying import pooled

log = logging.getLogger("sluice.maintenance")

BATCH = 1000


class Rescuer:
    def __init__(self, pool: AsyncConnectionPool, *, interval: float) -> None:
        self._pool = pool
        self._interval = interval
        self._aside = SetAside("rescuer")

    async def tick(self) -> float:
        """Rescue every expired lease; returns how long to sleep."""
        async with pooled(self._pool) as conn:
            while True:
                try:
                    rows = await protocol.job_rescue_expired(conn, limit=BATCH)
                except Exception as exc:
                    if not refused(exc):
                        raise
                    self._aside.batch_failed(exc)
                    isolated = await protocol.job_rescue_expired_isolated(conn, limit=BATCH)
                    self._aside.jobs(isolated, "rescue")
                    return self._interval
                if rows:
                    dead = sum(1 for r in rows if r.state == "failed")
                    log.warning(
                        "rescued %d job(s) whose worker stopped heartbeating "
                        "(%d retried, %d dead-lettered)",
                        len(rows),
                        len(rows) - dead,
                        dead,
                        extra={"job_ids": [r.id for r in rows[:20]]},
                    )
                if len(rows) < BATCH:
                    return self._interval
