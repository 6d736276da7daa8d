"""The worker's LISTEN connection: wake-ups for new ready jobs, and control
messages (cancel, pause, resume).

One dedicated connection, outside the pool: a pooled connection would be handed
to other work and miss notifications. When it drops, the listener reconnects
with backoff, listens again and tells the worker to catch up, since
notifications sent while it was away are lost. The connection is checked every
`check_interval` so a silently dead one (network cut) is noticed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from sluice.core.db import connect
from sluice.core.logging import error_line
from sluice.core.queries import Q

log = logging.getLogger("sluice.worker")

JOBS_CHANNEL = "sluice_jobs"
CONTROL_CHANNEL = "sluice_control"


class Listener:
    """Dispatches notifications to callbacks; reconnects on its own."""

    def __init__(
        self,
        url: str,
        *,
        on_jobs: Callable[[str], None],
        on_control: Callable[[dict[str, Any]], None],
        on_connected: Callable[[], None],
        check_interval: float = 10.0,
        max_backoff: float = 5.0,
        prepare: bool = True,
    ) -> None:
        self._url = url
        self._prepare = prepare
        self._on_jobs = on_jobs
        self._on_control = on_control
        self._on_connected = on_connected
        self._check_interval = check_interval
        self._max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.connections = 0

    async def run(self) -> None:
        delay = 0.05
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await connect(
                    self._url, prepare=self._prepare, application_name="sluice-listener"
                )
                await Q.worker_listen(conn)
                self.connections += 1
                if self.connections > 1:
                    log.info("listener reconnected")
                self.connected.set()
                delay = 0.05
                # Anything sent while we were not listening is lost: claim as if notified.
                self._on_connected()
                await self._receive(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.connected.clear()
                log.warning(
                    "listener connection lost, reconnecting in %.2fs: %s",
                    delay,
                    error_line(exc),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def _receive(self, conn: psycopg.AsyncConnection) -> None:
        on_jobs = self._on_jobs
        while True:
            async for note in conn.notifies(timeout=self._check_interval):
                if note.channel == JOBS_CHANNEL:
                    on_jobs(note.payload)
                else:
                    self._control(note.payload)
            # Quiet for a while: make sure the connection is still there.
            await AsyncConnectionPool.check_connection(conn)

    def _control(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("ignored a control message that is not JSON")
            return
        if isinstance(message, dict):
            self._on_control(message)
