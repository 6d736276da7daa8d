"""The API's connection pools: opened with the app, one connection per request
that needs one. Handlers ask for `conn` (the primary) or `read_conn` (reads that
tolerate replication lag: see `provide_read_connection` for the rule).

Waiting on the database is bounded, so a client gets a prompt 503 with
Retry-After (sluice.http.errors) instead of a hang when the database is cut off,
frozen or failing over:

- a free pooled connection: at most SLUICE_API_DB_TIMEOUT;
- the network (every connection): connecting, unacknowledged data and silence
  are bounded by the same timeout (`sluice.core.db.network_bounds`);
- the statements of one request: SLUICE_API_STATEMENT_TIMEOUT from the moment it
  got its connection (`Deadline`).

A connection that failed makes the pool test its idle ones, and a read-only one
(a standby after a failover) makes it replace them all, so the API comes back by
itself once the database does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import psycopg
from litestar import Litestar
from litestar.datastructures import State
from psycopg import AsyncConnection, errors
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from sluice.core.config import SettingsError
from sluice.core.db import check_notifications, open_pool, open_read_pool
from sluice.http.deps import Settings
from sluice.http.settings import ApiSettings

log = logging.getLogger("sluice.api")


def pool_lifespan(
    settings: ApiSettings, pool: AsyncConnectionPool | None = None
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Open the pool when the app starts and close it when it stops. A `pool`
    passed in (a process that runs the API beside other services) is used as
    is and left open."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if pool is not None:
            app.state.pool = app.state.read_pool = pool
            yield
            return
        if not settings.database_url:
            raise SettingsError("SLUICE_DATABASE_URL is not set")
        opened = await open_pool(
            settings.database_url,
            max_size=settings.pool_size,
            prepare=settings.db_prepare,
            application_name="sluice-api",
            db_timeout=settings.db_timeout,
        )
        app.state.pool = opened
        app.state.read_pool = await open_read_pool(
            settings.read_database_url,
            opened,
            max_size=settings.pool_size,
            prepare=settings.db_prepare,
            db_timeout=settings.db_timeout,
        )
        # The API does not listen itself; it checks that the workers' LISTEN URL gets
        # what is sent through the main URL, so /ready can warn about a pooler.
        self_test = asyncio.create_task(
            check_notifications(settings.listen_url or settings.database_url, settings.database_url)
        )
        try:
            yield
        finally:
            self_test.cancel()
            if app.state.read_pool is not opened:
                await app.state.read_pool.close()
            await opened.close()

    return lifespan


async def provide_connection(state: State, settings: Settings) -> AsyncIterator[AsyncConnection]:
    """A pooled autocommit connection to the primary for the length of one request:
    for every write, and every read that must see writes already made (a client's
    `GET /jobs/{id}` right after its `POST /jobs`)."""
    async with lend(state.pool, settings) as conn:
        yield conn


async def provide_read_connection(
    state: State, settings: Settings
) -> AsyncIterator[AsyncConnection]:
    """A pooled connection from the read pool (SLUICE_READ_DATABASE_URL, e.g. a hot
    standby; the primary pool when unset), for reads that tolerate replication lag.

    The rule: list and statistics endpoints that a dashboard polls may read here
    (jobs, runs, DAGs, dead letters and their count, queues, schedules, workers,
    throughput, wait times, /metrics): a page that is a moment behind is refreshed
    by the next poll. Everything else stays on the primary: every write, and every
    read of one resource by id (`GET /jobs/{id}`, `/runs/{id}`, `/queues/{name}`...),
    because a client reads those right after its own write and must see it.
    Never write through this connection (a standby refuses)."""
    async with lend(state.read_pool, settings) as conn:
        yield conn


@asynccontextmanager
async def lend(pool: AsyncConnectionPool, settings: ApiSettings) -> AsyncIterator[AsyncConnection]:
    """A connection from `pool` for one request, waited for at most
    SLUICE_API_DB_TIMEOUT, its statements under a `Deadline`. A connection the
    deadline had to stop is closed rather than returned, so that a cancel still in
    flight cannot reach the next request's statement."""
    async with pool.connection(timeout=settings.db_timeout) as conn:
        deadline = Deadline(conn, settings.statement_timeout, settings.db_timeout)
        try:
            yield conn
        except errors.ReadOnlySqlTransaction:
            # The URL reached a standby (a fixed host after a switchover, or an old
            # primary): every pooled connection may be there; new ones can find the
            # new primary (a multi-host URL, HAProxy).
            await conn.close()
            tend(pool, pool.drain)
            raise
        except psycopg.Error:
            if conn.broken:
                # The others may have lost the database too: test them now rather
                # than hand them out one failed request at a time.
                tend(pool, pool.check)
            raise
        finally:
            if deadline.stop():
                await conn.close()


_tending: dict[AsyncConnectionPool, asyncio.Task[None]] = {}


def tend(pool: AsyncConnectionPool, action: Callable[[], Awaitable[None]]) -> None:
    """Run `pool.check` or `pool.drain` in the background, one at a time per pool."""
    if pool in _tending or pool.closed:
        return

    async def run() -> None:
        try:
            await action()
        except Exception as exc:  # a pool closing under us; the next failure tries again
            log.info("could not tend the %s pool: %s", pool.name, exc)
        finally:
            _tending.pop(pool, None)

    _tending[pool] = asyncio.create_task(run())


class Deadline:
    """Stops the statements of a request that keeps its connection busy for more
    than `seconds` (0: never): the running statement is cancelled (the request
    fails with QueryCanceled); a server that does not let go within `grace` (a
    frozen server, or a path that acknowledges packets but never answers) gets the
    socket shut, and the request fails with a broken connection at once instead of
    waiting on TCP. Costs one timer per request until it fires."""

    def __init__(self, conn: AsyncConnection, seconds: float, grace: float) -> None:
        self.conn, self.seconds, self.grace = conn, seconds, grace
        self.fired = False
        self._stopping: asyncio.Task[None] | None = None
        self._timer = (
            asyncio.get_running_loop().call_later(seconds, self._fire) if seconds > 0 else None
        )

    def _fire(self) -> None:
        self._stopping = asyncio.create_task(self._stop_statement())

    async def _stop_statement(self) -> None:
        conn = self.conn
        # Between two statements the request is not waiting on the database; stop
        # the next one it starts.
        while conn.pgconn.transaction_status != TransactionStatus.ACTIVE:
            if conn.closed:
                return
            await asyncio.sleep(0.05)
        self.fired = True
        log.warning(
            "a request kept its database connection busy past SLUICE_API_STATEMENT_TIMEOUT "
            "(%gs): cancelling its statement",
            self.seconds,
        )
        loop = asyncio.get_running_loop()
        cancelling = loop.time()
        # The outer bound for a libpq before 17, whose cancel blocks in a thread.
        with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
            async with asyncio.timeout(self.grace):
                await conn.cancel_safe(timeout=self.grace)
        await asyncio.sleep(max(0.0, self.grace - (loop.time() - cancelling)))
        if conn.pgconn.transaction_status == TransactionStatus.ACTIVE:
            log.warning("the database did not stop the statement: cutting the connection")
            shut_socket(conn)

    def stop(self) -> bool:
        """Disarm; True when the deadline fired (the connection must not be reused: a
        cancel request may still be on its way). Nothing to await: a watchdog cancelled
        before it fired never will (it does not yield between its last wait for the
        statement and setting `fired`)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._stopping is not None:
            self._stopping.cancel()
        return self.fired


def shut_socket(conn: AsyncConnection) -> None:
    """Shut the connection's socket both ways: whoever waits to read from it wakes
    with an error now (closing the descriptor under a waiting reader would not wake
    it). The connection is broken from then on."""
    with contextlib.suppress(OSError, psycopg.Error):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
