"""Maintenance under one elected leader: promote scheduled jobs, rescue expired
leases, fire cron schedules, prune.

The leader holds a lease row (sluice.leader_acquire) rather than an advisory
lock, so the election works through PgBouncer in transaction mode, and a
leader that dies loses the lease when it expires. Every worker with
maintenance enabled is a candidate; the services run only while this one leads.
Each service is safe to run twice at once anyway (SKIP LOCKED, idempotency
keys), so a brief overlap at a hand-over does no harm.

The leader keeps track of its contact with the database (`Contact`): when it
was elected, and when it last regained the database after losing it (a
restart, a failover, a network cut). The rescuer waits until the leader has had
the database for a whole lease before it rescues anything, so that an outage
longer than the lease does not rescue the jobs of workers that are alive: they
renew their leases within moments of the database coming back. See
docs/state-machine.md, "Rescue after an outage".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

import psycopg
from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.worker.cancelling import cancel_and_wait
from sluice.worker.cron import CronScheduler
from sluice.worker.promoter import Promoter
from sluice.worker.pruner import Pruner
from sluice.worker.rescuer import Rescuer, Untouched
from sluice.worker.retrying import TRANSIENT, describe, pooled
from sluice.worker.settings import WorkerSettings

log = logging.getLogger("sluice.maintenance")

LEADER_NAME = "maintenance"


class Contact:
    """How long the maintenance leader has had the database without a break.

    Every statement of the election and the services reports here: a success
    (`ok`), or a connection or read-only error (`lost`). Contact counts from
    the first success after a loss, an election, or a silence longer than
    `gap` (a stretch without any statement, such as an event loop held up by a
    handler, might have hidden an outage).
    """

    def __init__(self, *, gap: float) -> None:
        self._gap = gap
        self._since: float | None = None
        self._last: float | None = None

    def ok(self) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last > self._gap:
            self._since = now
        self._last = now

    def lost(self) -> None:
        self._since = self._last = None

    def held_for(self) -> float:
        """Seconds since contact was (re)gained; 0 without contact, and 0 after a
        silence longer than `gap` (until the next statement, contact is unknown)."""
        now = time.monotonic()
        if self._since is None or self._last is None or now - self._last > self._gap:
            return 0.0
        return now - self._since


async def service_loop(
    name: str, tick: Callable[[], Awaitable[float]], contact: Contact | None = None
) -> None:
    """Run `tick` forever, sleeping as long as it asks; errors are logged and retried.
    A tick that returns reports contact with the database, unless it says it did
    not reach the database (`Untouched`): the rescuer waiting out its grace during
    an outage must not count as the database being back."""
    delay = 0.1
    while True:
        try:
            sleep = await tick()
            delay = 0.1
            if contact is not None and not isinstance(sleep, Untouched):
                contact.ok()
        except TRANSIENT as exc:
            if contact is not None:
                contact.lost()
            log.warning(
                "%s: database unavailable, retrying in %.1fs: %s", name, delay, describe(exc)
            )
            sleep, delay = delay, min(delay * 2, 5.0)
        except Exception:
            log.exception("%s failed; retrying", name)
            sleep, delay = delay, min(delay * 2, 5.0)
        await asyncio.sleep(sleep)


class Maintenance:
    """Campaigns for leadership and runs the services while leader."""

    def __init__(self, pool: AsyncConnectionPool, settings: WorkerSettings) -> None:
        self._pool = pool
        self._holder = settings.id
        self._ttl = dt.timedelta(seconds=settings.leader_ttl)
        # A silence of half a lease counts as a loss of contact: an outage that
        # short cannot cost a live worker its lease (it renews several times per
        # lease), one longer could. The election's own statement comes at least
        # every quarter lease, so contact lasts even when every service sleeps
        # longer than that (short leases, long intervals).
        self.contact = Contact(gap=settings.lease_ttl / 2)
        self._renew_every = min(settings.leader_ttl / 3, settings.lease_ttl / 4)
        self._services: dict[str, Callable[[], Awaitable[float]]] = {
            "promoter": Promoter(pool, max_sleep=settings.promote_interval).tick,
            "rescuer": Rescuer(
                pool,
                interval=settings.rescue_interval,
                contact=self.contact,
                grace=settings.lease_ttl,
            ).tick,
            "cron": CronScheduler(
                pool, max_sleep=settings.cron_interval, grace=settings.cron_misfire_grace
            ).tick,
            "pruner": Pruner(
                pool,
                interval=settings.prune_interval,
                retention=settings.retention,
                worker_retention=settings.worker_retention,
            ).tick,
        }
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def leading(self) -> bool:
        return bool(self._tasks)

    async def run(self) -> None:
        try:
            while True:
                try:
                    async with pooled(self._pool) as conn:
                        leader = await protocol.leader_acquire(
                            conn, name=LEADER_NAME, holder=self._holder, ttl=self._ttl
                        )
                    self.contact.ok()
                except psycopg.Error as exc:
                    # Cannot renew: another worker may take over once the lease expires.
                    self.contact.lost()
                    log.warning("leader election failed: %s", describe(exc))
                    leader = False
                if leader and not self._tasks:
                    log.info("elected maintenance leader")
                    self.contact.lost()
                    self.contact.ok()  # contact counts from the election
                    self._tasks = [
                        asyncio.create_task(
                            service_loop(name, tick, self.contact), name=f"sluice-{name}"
                        )
                        for name, tick in self._services.items()
                    ]
                elif not leader and self._tasks:
                    log.info("no longer the maintenance leader")
                    await self._stop_services()
                await asyncio.sleep(self._renew_every)
        finally:
            await self._stop_services()

    async def _stop_services(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def resign(self) -> None:
        """Give the lease up so another worker need not wait for it to expire."""
        with contextlib.suppress(*TRANSIENT):
            async with pooled(self._pool) as conn:
                await protocol.leader_release(conn, name=LEADER_NAME, holder=self._holder)
