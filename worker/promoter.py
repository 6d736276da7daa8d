"""Promotes scheduled jobs (delayed, or waiting out a retry backoff) to ready
when their time comes; their queues are notified by the engine's trigger."""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.worker.isolation import SetAside, refused
from sluice.worker.retrying import pooled

log = logging.getLogger("sluice.maintenance")

BATCH = 10000
# Never sleep less than this: a clock slightly ahead of the database's would
# otherwise spin on a job that is due by our clock but not yet by its.
MIN_SLEEP = 0.005


class Promoter:
    """One pass promotes everything due; the next is timed by the next due job."""

    def __init__(self, pool: AsyncConnectionPool, *, max_sleep: float) -> None:
        self._pool = pool
        self._max_sleep = max_sleep
        self._aside = SetAside("promoter")

    async def tick(self) -> float:
        """Promote due jobs; returns how long to sleep before the next pass."""
        async with pooled(self._pool) as conn:
            total = 0
            try:
                while (
                    promoted := await protocol.job_promote_scheduled(conn, limit=BATCH)
                ) >= BATCH:
                    total += promoted
                total += promoted
            except psycopg.DatabaseError as exc:
                if not refused(exc):
                    raise
                self._aside.batch_failed(exc)
                rows = await protocol.job_promote_scheduled_isolated(conn, limit=BATCH)
                total += self._aside.jobs(rows, "promote")
                if len(rows) >= BATCH:
                    return MIN_SLEEP
            wait = await protocol.job_next_due_in(conn)
        if total:
            log.debug("promoted %d scheduled job(s)", total)
        if wait is None:
            return self._max_sleep
        return min(self._max_sleep, max(MIN_SLEEP, wait))
