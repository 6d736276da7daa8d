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
from collections.abc import AsyncIterator

import psycopg

from sluice.core.db import connect
from sluice.worker.retrying import TRANSIENT, read_only


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
        (or a read-only server) so the next caller reconnects."""
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await connect(
                    self._url, prepare=self._prepare, application_name=self._name
                )
            try:
                yield self._conn
            except TRANSIENT as exc:
                if self._conn.broken or self._conn.closed or read_only(exc):
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
