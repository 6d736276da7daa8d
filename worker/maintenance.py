"""Maintenance under one elected leader: promote scheduled jobs, rescue expired
leases, fire cron schedules, prune.

The leader holds a lease row (sluice.leader_acquire) rather than an advisory
lock, so the election works through PgBouncer in transaction mode, and a
leader that dies loses the lease when it expires. Every worker with
maintenance enabled is a candidate; the services run only while this one leads.
Each service is safe to run twice at once anyway (SKIP LOCKED, idempotency
keys), so a brief overlap at a hand-over does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.worker.cancelling import cancel_and_wait
from sluice.worker.cron import CronScheduler
from sluice.worker.promoter import Promoter
from sluice.worker.pruner import Pruner
from sluice.worker.rescuer import Rescuer
from sluice.worker.retrying import TRANSIENT, describe, pooled
from sluice.worker.settings import WorkerSettings

log = logging.getLogger("sluice.maintenance")

LEADER_NAME = "maintenance"


async def service_loop(name: str, tick: Callable[[], Awaitable[float]]) -> None:
    """Run `tick` forever, sleeping as long as it asks; errors are logged and retried."""
    delay = 0.1
    while True:
        try:
            sleep = await tick()
            delay = 0.1
        except TRANSIENT as exc:
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
        self._renew_every = settings.leader_ttl / 3
        self._services: dict[str, Callable[[], Awaitable[float]]] = {
            "promoter": Promoter(pool, max_sleep=settings.promote_interval).tick,
            "rescuer": Rescuer(pool, interval=settings.rescue_interval).tick,
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
                except psycopg.Error as exc:
                    # Cannot renew: another worker may take over once the lease expires.
                    log.warning("leader election failed: %s", describe(exc))
                    leader = False
                if leader and not self._tasks:
                    log.info("elected maintenance leader")
                    self._tasks = [
                        asyncio.create_task(service_loop(name, tick), name=f"sluice-{name}")
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
