"""Rescues running jobs whose lease expired (their worker died, hung, or lost
the network): each counts as a failed attempt, retried or dead-lettered.

A lease that ran out while the database was away says nothing about its worker:
no worker could renew it. So the rescuer of a maintenance leader waits until the
leader has had the database for a whole lease (`grace`, its SLUICE_LEASE_TTL)
since it was elected or last regained it; by then every live worker has renewed
what it holds (they retry within a fraction of a second once the database is
back), and an expired lease again means a worker that stopped heartbeating
after the database came back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.worker.isolation import SetAside, refused
from sluice.worker.meters import count_rescued
from sluice.worker.retrying import pooled

if TYPE_CHECKING:
    from sluice.worker.maintenance import Contact

log = logging.getLogger("sluice.maintenance")

BATCH = 1000


class Untouched(float):
    """A tick's sleep when the tick did not reach the database (the rescuer waiting
    out its grace): the service loop does not count it as contact."""


class Rescuer:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        interval: float,
        contact: Contact | None = None,
        grace: float = 0.0,
    ) -> None:
        self._pool = pool
        self._interval = interval
        self._contact = contact
        self._grace = grace
        self._aside = SetAside("rescuer")
        self._waiting = False

    async def tick(self) -> float:
        """Rescue every expired lease; returns how long to sleep."""
        if self._contact is not None:
            left = self._grace - self._contact.held_for()
            if left > 0:
                if not self._waiting:
                    self._waiting = True
                    log.info(
                        "rescue of expired leases waits %.1fs: the database has been "
                        "reachable for less than a lease, and live workers renew theirs first",
                        left,
                    )
                return Untouched(min(left, self._interval))
            self._waiting = False
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
                    count_rescued(len(rows) - dead, dead)
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
