"""Rescues running jobs whose lease expired (their worker died, hung, or lost
the network): each counts as a failed attempt, retried or dead-lettered."""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from sluice.core.queries import Q
from sluice.worker.isolation import SetAside, refused
from sluice.worker.meters import count_rescued

log = logging.getLogger("sluice.maintenance")

BATCH = 1000


class Rescuer:
    def __init__(self, pool: AsyncConnectionPool, *, interval: float) -> None:
        self._pool = pool
        self._interval = interval
        self._aside = SetAside("rescuer")

    async def tick(self) -> float:
        """Rescue every expired lease; returns how long to sleep."""
        async with self._pool.connection() as conn:
            while True:
                try:
                    rows = await Q.job_rescue_expired(conn, limit=BATCH)
                except psycopg.DatabaseError as exc:
                    if not refused(exc):
                        raise
                    self._aside.batch_failed(exc)
                    isolated = await Q.job_rescue_expired_isolated(conn, limit=BATCH)
                    self._aside.rows(isolated, "rescue")
                    return self._interval
                if rows:
                    dead = sum(1 for r in rows if r["state"] == "failed")
                    count_rescued(len(rows) - dead, dead)
                    log.warning(
                        "rescued %d job(s) whose worker stopped heartbeating "
                        "(%d retried, %d dead-lettered)",
                        len(rows),
                        len(rows) - dead,
                        dead,
                        extra={"job_ids": [r["id"] for r in rows[:20]]},
                    )
                if len(rows) < BATCH:
                    return self._interval
