"""The worker's one policy for database errors that are not the statement's fault.

A statement that fails because the database is away or is not the primary
(any more, or yet) did nothing, or did something every worker write is fenced
against: it is sent again once the database takes writes, and the error is
never recorded as a job's failure. What counts as such an error:

- `OperationalError`: the connection dropped or could not be made (a server
  restart, a failover, a network cut, the pool's wait for a connection), the
  server shutting down or starting up (57P01-57P03), or the transaction chosen
  as a deadlock or serialization victim (class 40);
- `InterfaceError`: the connection was already closed on this side;
- SQLSTATE 25006, `read_only_sql_transaction`: the connection reached a server
  that only reads, which is what the old primary is after a switchover, seen
  through a URL naming one fixed host (or before the pooler or the multi-host
  URL has moved on). The connection is closed, so the next one is made afresh
  and can find the new primary.

Every other database error is the statement's own (a CHECK, a user's trigger
that raises, a value that cannot be stored) and is handled where it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from sluice.core.logging import error_line

log = logging.getLogger("sluice.worker")

T = TypeVar("T")

TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, errors.ReadOnlySqlTransaction)


def read_only(exc: BaseException) -> bool:
    """The server refused a write because it only reads (a standby)."""
    return isinstance(exc, errors.ReadOnlySqlTransaction)


def describe(exc: BaseException) -> str:
    """One line for the log, saying what a read-only error means here."""
    if read_only(exc):
        return f"{error_line(exc)} (the server is not the primary: a failover?)"
    return error_line(exc)


async def discard_if_read_only(conn: psycopg.AsyncConnection[Any], exc: BaseException) -> None:
    """Close a connection that reached a read-only server: a pool then replaces it
    rather than handing it out again, and a new one can reach the new primary."""
    if read_only(exc):
        with contextlib.suppress(Exception):
            await conn.close()


@contextlib.asynccontextmanager
async def pooled(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of `pool`, closed instead of returned when it met a read-only server."""
    async with pool.connection() as conn:
        try:
            yield conn
        except TRANSIENT as exc:
            await discard_if_read_only(conn, exc)
            raise


async def retry_transient(
    what: str,
    attempt_fn: Callable[[], Awaitable[T]],
    *,
    deadline: float | None = None,
    max_delay: float = 2.0,
) -> T:
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
            log.warning("%s failed, retrying in %.2fs: %s", what, delay, describe(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
