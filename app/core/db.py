"""Connections to PostgreSQL: URLs, the async pools, and what a pooler in between
changes (prepared statements, notifications).

URLs reach libpq as the user wrote them, so every form libpq accepts works in
every process: `postgresql://` and `postgres://` URLs, several hosts
(`postgres://h1:5432,h2:5433/db?target_session_attrs=read-write`, as
`pg_autoctl show uri` prints, or `?host=h1,h2&port=5432,5433`), Unix sockets,
`key=value` strings and `service=`. Only SQLAlchemy's dialect prefix
(`postgresql+psycopg://`) is taken off. Alembic gets its connections from the
same function (`connect_sync`), never from a URL parsed by SQLAlchemy, which
knows one host only.

Prepared statements are on unless a pooler cannot keep them: the first
connection to a URL runs a probe (`prepared_statements_problem`), and any
connection that still meets a pooler's lost-statement error turns them off for
the whole process and repeats the statement unprepared (`PoolerSafeCursor`).
A worker does not wait for the probe (`PreparedStatements.probe_in_background`):
until its answer, the connections it opens prepare nothing (`AwaitingProbeCursor`),
which is safe behind any pooler, and they start preparing once the probe says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol

log = logging.getLogger("sluice.db")

# Prepare a statement on the server after it has run this many times on a
# connection: the hot queries (claim, complete) skip parse and plan thereafter.
PREPARE_THRESHOLD = 5

# TCP keepalives, so a connection to a host that vanished (network cut) fails
# within a minute instead of waiting for a reply forever. Ignored on Unix sockets.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 20,
    "keepalives_interval": 5,
    "keepalives_count": 4,
}

_DIALECT_PREFIXES = ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://")


def normalize_url(url: str) -> str:
    """The URL (or `key=value` string) for libpq: SQLAlchemy's dialect prefix removed,
    `postgres://` spelled `postgresql://`; anything else exactly as written."""
    for prefix in (*_DIALECT_PREFIXES, "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


# --- prepared statements behind a pooler -------------------------------------------


class PreparedStatements:
    """Whether this process prepares statements on the server: on until a pooler is
    seen losing them (PgBouncer before 1.21 in transaction mode, or without
    `max_prepared_statements`), then off for every connection, for good."""

    def __init__(self) -> None:
        self.enabled = True
        self.reason: str | None = None
        self._probed: dict[str, str | None] = {}
        # URLs whose probe runs in the background (read from the lease keeper's thread too).
        self._pending: set[str] = set()

    def disable(self, reason: str) -> None:
        if self.enabled:
            self.enabled = False
            self.reason = reason
            log.warning(
                "prepared statements are off for this process: %s. Set SLUICE_DB_PREPARE=0 "
                "to skip the check, or use PgBouncer >= 1.21 with max_prepared_statements",
                reason,
            )

    async def check(self, url: str) -> bool:
        """Probe `url` once per process (two callers at once may both probe: harmless);
        False when statements must not be prepared."""
        if self.enabled and url not in self._probed:
            problem = self._probed[url] = await prepared_statements_problem(url)
            if problem:
                self.disable(problem)
        return self.enabled

    def pending(self, url: str) -> bool:
        """Whether the probe of `url` is running in the background."""
        return url in self._pending

    def safe(self, url: str) -> bool:
        """Whether the probe of `url` found prepared statements safe (and nothing
        turned them off since)."""
        return self.enabled and url in self._probed and self._probed[url] is None

    def probe_in_background(
        self, url: str, *, start: asyncio.Event | None = None
    ) -> asyncio.Task[None] | None:
        """Probe `url` in a task of its own, after `start` is set (None: at once), so
        that a worker's first claim does not wait for the probe's two connections and
        its round trips. Until the answer, connections opened for `url` with
        `prepare=True` prepare nothing (statements go unnamed, which every pooler
        mode keeps), then prepare from their next statement on if the probe says it
        is safe: as before, no statement is prepared on the server before a probe
        said so. A probe that fails (the database away) leaves them unprepared, and
        the next connection opened for `url` probes again. None: nothing to probe."""
        if not self.enabled or url in self._probed or url in self._pending:
            return None
        self._pending.add(url)

        async def probe() -> None:
            try:
                if start is not None:
                    await start.wait()
                await self.check(url)
            except (psycopg.Error, OSError) as exc:
                log.info("prepared statements stay off until checked: probe failed (%s)", exc)
            finally:
                self._pending.discard(url)

        return asyncio.create_task(probe(), name="sluice-probe")


PREPARED = PreparedStatements()


def _token() -> str:
    """16 random hex digits, as secrets.token_hex(8) (whose import, hmac and hashlib
    with it, is a couple of ms of a worker's start-up that nothing else needs)."""
    return os.urandom(8).hex()


_LOST_STATEMENT = (errors.InvalidSqlStatementName, errors.DuplicatePreparedStatement)


def pooler_lost_statement(exc: BaseException) -> bool:
    """Whether `exc` says a pooler lost one of psycopg's prepared statements: the
    server connection under us changed since it was prepared."""
    # psycopg names its prepared statements _pg3_N.
    return isinstance(exc, _LOST_STATEMENT) and "_pg3_" in str(exc)


class PoolerSafeCursor(psycopg.AsyncCursor):
    """A cursor that survives a pooler dropping prepared statements: the first such
    error turns them off process-wide; a statement outside a transaction block
    (nothing ran: the server refused it at parse or bind) is sent again, unprepared.
    Inside a transaction the error propagates: the transaction is aborted and the
    caller's own retry runs unprepared."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        conn = self.connection
        if not PREPARED.enabled and conn.prepare_threshold is not None:
            conn.prepare_threshold = None
        try:
            return await super().execute(query, params, **kwargs)
        except _LOST_STATEMENT as exc:
            if not pooler_lost_statement(exc):
                raise
            PREPARED.disable(f"the server lost a prepared statement ({exc.sqlstate})")
            conn.prepare_threshold = None
            if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
                raise
            return await super().execute(query, params, **{**kwargs, "prepare": False})


class AwaitingProbeCursor(PoolerSafeCursor):
    """The cursor of a connection opened while the probe of its URL (`url`, set by
    `_awaiting_probe`) runs in the background: the connection, opened with
    prepare_threshold None, gets PREPARE_THRESHOLD at its first statement after the
    probe found prepared statements safe."""

    url = ""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        conn = self.connection
        if conn.prepare_threshold is None and PREPARED.safe(self.url):
            conn.prepare_threshold = PREPARE_THRESHOLD
        return await super().execute(query, params, **kwargs)


@functools.cache
def _awaiting_probe(url: str) -> type[AwaitingProbeCursor]:
    return type("AwaitingProbeCursor", (AwaitingProbeCursor,), {"url": url})


async def prepared_statements_problem(
    url: str, *, within: float = 3.0, tries: int = 8
) -> str | None:
    """Why statements prepared on `url` would not survive (a pooler in transaction
    mode that does not track them), or None when they do.

    Connection A prepares a probe, which also marks its server session. Connection
    B then opens a transaction and reads the mark: B sees it only when a pooler
    handed it the session A just used, which B's transaction now pins (never on a
    direct connection, where each client has its own session; PgBouncer hands out
    the most recently used server connection, but other clients may take it
    first, so B tries a few times). Pinned there, A's prepared probe must run on
    another server connection: it runs (PgBouncer >= 1.21 with
    max_prepared_statements re-prepared it), fails, or waits for a free server
    connection: the last two mean "do not prepare", and so does a run under
    psycopg's own statement name, which only another client can have left on that
    server connection (a pooler that tracks statements prepares them under names
    of its own). B never seeing the mark means no session is shared between
    clients (a direct connection, session pooling).

    Before each of B's later tries, A runs its probe again: that marks the session
    A has now (other clients' statements, this worker's own among them since the
    probe runs beside its start-up, may have taken the one B missed), and a run on
    another session than the first is itself an answer, as above. So traffic from
    other clients makes the answer come sooner, never a wrong "no pooler".
    """
    token = _token()
    another = "a pooler ran another client's prepared statement"
    # A plain cursor on A (not PoolerSafeCursor): its errors are what the probe wants.
    a = await psycopg.AsyncConnection.connect(
        normalize_url(url),
        **{**connection_kwargs(application_name="sluice-probe"), "prepare_threshold": 0},
    )

    async def probe_a() -> protocol.Probe | None:
        try:
            again = await protocol.connection_probe(a, token=token)
        except (psycopg.DataError, psycopg.ProgrammingError, errors.ProtocolViolation):
            # Another client's statement under our name, with other parameters.
            return None
        # Another client's statement ran under our name: one that is not even
        # ours, or the same probe left by another client (it answers our token,
        # but the pooler did not prepare it).
        return None if again is None or again.token != token else again

    try:
        b = await connect(url, prepare=False, application_name="sluice-probe")
        try:
            first = await protocol.connection_probe(a, token=token)
            if first is None:
                return another
            for attempt in range(tries):
                if attempt:
                    moved = await probe_a()
                    if moved is None:
                        return another
                    if moved.pid != first.pid:
                        # Another server session ran the statement prepared on the
                        # first: a pooler that tracks prepared statements, unless
                        # it ran under psycopg's name (another client's).
                        if moved.untranslated:
                            return another
                        log.info("a pooler in transaction mode keeps prepared statements")
                        return None
                async with b.transaction():
                    if await protocol.connection_mark(b) != token:
                        continue  # another server session: no pooler, or not this time
                    async with asyncio.timeout(within):
                        again = await probe_a()
                if again is None or again.untranslated:
                    return another
                log.info("a pooler in transaction mode keeps prepared statements: they stay on")
                return None
        finally:
            with contextlib.suppress(Exception):
                await b.close()
    except TimeoutError:
        return "a pooler had no server connection for a second client connection"
    except _LOST_STATEMENT as exc:
        # Even the first statement can fail: another client left the same name on
        # the server connection the pooler gave us.
        return f"a pooler lost a prepared statement ({exc.sqlstate})"
    finally:
        with contextlib.suppress(Exception):
            await a.close()
    return None


# --- connections and pools ---------------------------------------------------------


def network_bounds(timeout: float) -> dict[str, Any]:
    """libpq parameters that fail a connection once the network has kept it waiting
    about `timeout` seconds: connecting (per host; libpq's floor is 2 s), data sent
    and not acknowledged (TCP_USER_TIMEOUT), silence on an open connection (keepalive
    probes from half of it on). A slow statement is not cut short: the server's
    kernel answers the probes while it runs. Ignored on Unix sockets."""
    return {
        "connect_timeout": max(2, math.ceil(timeout)),
        "tcp_user_timeout": max(1, round(timeout * 1000)),
        "keepalives": 1,
        "keepalives_idle": max(1, int(timeout // 2)),
        "keepalives_interval": 1,
    }


def connection_kwargs(
    *, prepare: bool = True, application_name: str = "sluice", db_timeout: float | None = None
) -> dict[str, Any]:
    """Keyword arguments for every Sluice connection; with `db_timeout`, the network
    bounds of `network_bounds(db_timeout)` instead of the default keepalives.

    Autocommit: each named query is its own transaction unless the caller opens
    one (`async with conn.transaction()`), so nothing holds a snapshot open by
    accident, which would keep vacuum from cleaning the job tables.
    """
    return {
        "autocommit": True,
        "prepare_threshold": PREPARE_THRESHOLD if prepare and PREPARED.enabled else None,
        "application_name": application_name,
        **(KEEPALIVES if db_timeout is None else network_bounds(db_timeout)),
    }


async def _prepare(url: str, prepare: bool) -> tuple[bool, type[PoolerSafeCursor]]:
    """Whether a new connection to `url` prepares statements, and its cursor class."""
    if not prepare:
        return False, PoolerSafeCursor
    if PREPARED.pending(url):
        return False, _awaiting_probe(url)
    return await PREPARED.check(url), PoolerSafeCursor


async def connect(
    url: str, *, prepare: bool = True, application_name: str = "sluice"
) -> psycopg.AsyncConnection:
    """One connection outside any pool (a LISTEN connection, the worker's writer)."""
    prepare, cursor = await _prepare(url, prepare)
    return await psycopg.AsyncConnection.connect(
        normalize_url(url),
        cursor_factory=cursor,
        **connection_kwargs(prepare=prepare, application_name=application_name),
    )


def connect_sync(url: str, *, application_name: str = "sluice-migrate") -> psycopg.Connection:
    """A blocking connection in a transaction (for Alembic), never prepared: a
    one-shot admin step gains nothing from it and may run through a pooler."""
    return psycopg.connect(
        normalize_url(url), prepare_threshold=None, application_name=application_name, **KEEPALIVES
    )


async def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    prepare: bool = True,
    application_name: str = "sluice",
    db_timeout: float | None = None,
) -> AsyncConnectionPool:
    """Open (and wait for) an async pool of autocommit connections to `url`. With
    `db_timeout`, a caller waits at most that long for a connection, the network
    bounds of `network_bounds(db_timeout)` apply to every connection, and the pool
    gives up reconnecting after twice that: the next caller then starts a new attempt
    at once, instead of waiting out psycopg_pool's doubling delay (1, 2, 4... s up to
    5 minutes), so the pool is back within seconds of the database."""
    prepare, cursor = await _prepare(url, prepare)
    pool = AsyncConnectionPool(
        normalize_url(url),
        min_size=min_size,
        max_size=max_size,
        kwargs={
            **connection_kwargs(
                prepare=prepare, application_name=application_name, db_timeout=db_timeout
            ),
            "cursor_factory": cursor,
        },
        open=False,
        name=application_name,
        **({} if db_timeout is None else {"timeout": db_timeout}),
    )
    await pool.open(wait=True, timeout=30)
    if db_timeout is not None:
        # After opening: a database still starting up is waited for as long as before.
        pool.reconnect_timeout = 2 * db_timeout
    return pool


async def open_read_pool(
    read_url: str | None,
    primary: AsyncConnectionPool,
    *,
    max_size: int = 10,
    prepare: bool = True,
    application_name: str = "sluice-read",
    db_timeout: float | None = None,
) -> AsyncConnectionPool:
    """The pool for reads that tolerate replication lag (SLUICE_READ_DATABASE_URL),
    or `primary` itself when no read URL is set. See docs/scaling.md for what may
    read from it: never a write, never a read that must see this process's own
    writes."""
    if not read_url:
        return primary
    return await open_pool(
        read_url,
        min_size=1,
        max_size=max_size,
        prepare=prepare,
        application_name=application_name,
        db_timeout=db_timeout,
    )


# --- notifications through a pooler ------------------------------------------------

# Self-test tokens travel on the control channel (protocol.notify_control) under this key.
SELF_TEST_KEY = "self_test"


@dataclass
class NotificationCheck:
    """The last self-test of LISTEN/NOTIFY in this process: does a NOTIFY sent
    through the main URL reach the LISTEN connection? A pooler in transaction
    mode swallows notifications; then wake-ups fall back to polling."""

    state: str = "unchecked"  # unchecked | checking | ok | not delivered | failed
    detail: str | None = None
    latency: float | None = None

    def warning(self) -> str | None:
        """A sentence for /ready and the log when notifications do not arrive."""
        if self.state in ("ok", "unchecked", "checking"):
            return None
        return self.detail


NOTIFICATIONS = NotificationCheck()


def self_test_token(payload: str) -> str | None:
    """The token of a self-test control message, or None for any other payload."""
    if SELF_TEST_KEY not in payload:
        return None
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    token = message.get(SELF_TEST_KEY) if isinstance(message, dict) else None
    return token if isinstance(token, str) else None


async def notification_self_test(
    listening: psycopg.AsyncConnection,
    notify_url: str,
    *,
    within: float = 5.0,
    on_other: Callable[[psycopg.Notify], None] | None = None,
) -> NotificationCheck:
    """Send a unique token through `notify_url` on the control channel and wait at
    most `within` seconds for it on `listening` (already LISTENing). Other
    notifications that arrive meanwhile go to `on_other(note)`. The result is
    also stored in NOTIFICATIONS for /ready."""
    token = _token()
    NOTIFICATIONS.state, NOTIFICATIONS.detail = "checking", None
    started = time.monotonic()
    try:
        async with await connect(
            notify_url, prepare=False, application_name="sluice-self-test"
        ) as sender:
            await protocol.notify_control(sender, payload=json.dumps({SELF_TEST_KEY: token}))
        deadline = started + within
        while (left := deadline - time.monotonic()) > 0:
            # One packet at a time (stop_after=1 still yields the whole packet): leaving
            # the generator in the middle of one would drop the notifications after the
            # token, a job's wake-up among them. Closed on leaving: an open notifies()
            # generator holds the connection's lock.
            found = False
            async with contextlib.aclosing(listening.notifies(timeout=left, stop_after=1)) as notes:
                async for note in notes:
                    if self_test_token(note.payload) == token:
                        found = True
                    elif on_other is not None:
                        on_other(note)
            if found:
                NOTIFICATIONS.state = "ok"
                NOTIFICATIONS.latency = time.monotonic() - started
                NOTIFICATIONS.detail = None
                return NOTIFICATIONS
        NOTIFICATIONS.state = "not delivered"
        NOTIFICATIONS.detail = (
            f"a NOTIFY sent through SLUICE_DATABASE_URL did not reach the LISTEN connection "
            f"(SLUICE_LISTEN_URL) within {within:g}s: a pooler in transaction mode between "
            "them? Idle workers then wake only on their poll (SLUICE_POLL_INTERVAL). Point "
            "SLUICE_LISTEN_URL straight at PostgreSQL's primary"
        )
        log.warning("notification self-test: %s", NOTIFICATIONS.detail)
    except psycopg.Error as exc:
        NOTIFICATIONS.state = "failed"
        NOTIFICATIONS.detail = f"notification self-test failed: {type(exc).__name__}"
        log.warning("%s", NOTIFICATIONS.detail)
    return NOTIFICATIONS


async def check_notifications(listen_url: str, notify_url: str, *, within: float = 5.0) -> None:
    """The self-test on a connection of its own (for a process without a listener,
    such as the API, whose /ready reports the result)."""
    try:
        async with await connect(
            listen_url, prepare=False, application_name="sluice-self-test"
        ) as conn:
            await protocol.worker_listen(conn)
            await notification_self_test(conn, notify_url, within=within)
    except psycopg.Error as exc:
        NOTIFICATIONS.state = "failed"
        NOTIFICATIONS.detail = f"notification self-test could not listen: {type(exc).__name__}"
        log.warning("%s", NOTIFICATIONS.detail)
