"""The lease keeper: every interval, one statement renews the leases of every
job this worker still holds, and the worker row says it is alive.

A job missing from the renewed ids is no longer ours (cancelled, or rescued
after this worker stalled past its lease): it is stopped here. The worker row
answers whether an operator paused this worker, in case the NOTIFY was missed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sluice.core.logging import error_line
from sluice.core.queries import Q
from sluice.worker.claimer import Claimer
from sluice.worker.completer import Completer
from sluice.worker.executor import Executor
from sluice.worker.writer import TRANSIENT, Writer

log = logging.getLogger("sluice.worker")


class Heartbeat:
    """Renews leases and the worker's registration."""

    def __init__(
        self,
        writer: Writer,
        executor: Executor,
        completer: Completer,
        claimer: Claimer,
        *,
        worker_id: str,
        interval: float,
        lease_ttl: float,
        register: Callable[[Any], Awaitable[None]],
    ) -> None:
        self._writer = writer
        self._executor = executor
        self._completer = completer
        self._claimer = claimer
        self._worker_id = worker_id
        self._interval = interval
        self._lease = dt.timedelta(seconds=lease_ttl)
        self._register = register

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.beat()
            except TRANSIENT as exc:
                log.warning("heartbeat failed (leases not renewed): %s", error_line(exc))

    async def beat(self) -> None:
        """Renew leases once; stop the jobs whose lease is gone."""
        async with self._writer.connection() as conn:
            # Under the writer's lock no outcome is being written: every id here is
            # still running in the database unless someone else ended it.
            ids = [*self._executor.running, *self._completer.pending_ids()]
            renewed: set[int] = set()
            if ids:
                rows = await Q.job_heartbeat(
                    conn, worker_id=self._worker_id, ids=ids, lease=self._lease
                )
                renewed = {row["id"] for row in rows}
            paused = await Q.worker_heartbeat(conn, id=self._worker_id)
            if paused is None:
                log.warning("this worker's row was gone from sluice.workers: registering again")
                await self._register(conn)
        lost = [job_id for job_id in ids if job_id not in renewed]
        if lost:
            stopped = self._executor.stop(lost, "lost")
            if stopped:
                log.warning(
                    "stopped %d job(s) that are no longer this worker's (cancelled or rescued)",
                    len(stopped),
                    extra={"job_ids": stopped[:20]},
                )
        self._claimer.set_paused(bool(paused))
