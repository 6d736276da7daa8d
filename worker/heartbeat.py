"""The worker's own heartbeat: every interval the worker row says it is alive,
and answers whether an operator paused this worker (in case the NOTIFY was
missed). It runs on the event loop, through the writer connection, so a worker
whose loop is blocked shows as silent in `sluice.worker_status`. The leases of
its jobs are renewed by the lease keeper (worker/leases.py), from a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from sluice.core import protocol
from sluice.core.logging import error_line
from sluice.worker.claimer import Claimer
from sluice.worker.retrying import TRANSIENT, describe
from sluice.worker.writer import Writer

log = logging.getLogger("sluice.worker")


class Heartbeat:
    """Keeps the worker's registration alive and its pause flag current."""

    def __init__(
        self,
        writer: Writer,
        claimer: Claimer,
        *,
        worker_id: str,
        interval: float,
        register: Callable[[Any], Awaitable[None]],
    ) -> None:
        self._writer = writer
        self._claimer = claimer
        self._worker_id = worker_id
        self._interval = interval
        self._register = register

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.beat()
            except TRANSIENT as exc:
                log.warning("heartbeat failed: %s", describe(exc))
            except psycopg.Error as exc:  # refused by the database: log, never stop
                log.error("heartbeat failed: %s", error_line(exc))

    async def beat(self) -> None:
        """Mark the worker alive once; follow its pause flag."""
        async with self._writer.connection() as conn:
            paused = await protocol.worker_heartbeat(conn, id=self._worker_id)
            if paused is None:
                log.warning("this worker's row was gone from sluice.workers: registering again")
                await self._register(conn)
        self._claimer.set_paused(bool(paused))
