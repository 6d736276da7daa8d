"""The connection through which a worker writes the outcomes of its jobs (and
its own heartbeat), one statement at a time.

Completion batches lock their job rows in id order. Lease renewals run on the
lease keeper's own connection (worker/leases.py) so that a blocked event loop
cannot stop them; they lock the same rows in the same order, so the two never
deadlock each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import psycopg

from sluice.core.db import connect
from sluice.core.logging import error_line

log = logging.getLogger("sluice.worker")

# Errors after which the same statement may simply be sent again: the
# connection dropped (server restart, network), or the server chose this
# transaction as a deadlock or serialization victim. Every worker write is
# lease-checked, so repeating one that did commit changes nothing.
TRANSIENT = (psycopg.OperationalError,)


class Writer:
    """A lazily (re)connected connection, used under a lock."""

    def __init__(self, url: str, *, prepare: bool = True, name: str = "sluice-worker") -> None:
        self._url = url
        self._prepare = prepare
        self._name = name
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """The connection, for this caller alone; dropped after a connection error
        so the next caller reconnects."""
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await connect(
                    self._url, prepare=self._prepare, application_name=self._name
                )
            try:
                yield self._conn
            except TRANSIENT:
                if self._conn.broken or self._conn.closed:
                    await self._discard()
                raise

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        async with self._lock:
            await self._discard()


async def retry_transient(
    what: str, attempt_fn, *, deadline: float | None = None, max_delay: float = 2.0
):
    """Run `attempt_fn()` until it does not raise a transient error, backing off
    between tries; past `deadline` (loop time) the error is raised."""
    loop = asyncio.get_running_loop()
    delay = 0.05
    while True:
        try:
            return await attempt_fn()
        except TRANSIENT as exc:
            if deadline is not None and loop.time() + delay > deadline:
                raise
            log.warning("%s failed, retrying in %.2fs: %s", what, delay, error_line(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
