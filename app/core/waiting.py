"""Waiting for jobs and runs to end, woken by PostgreSQL's notification, never by
polling (sql/schema/48_waiters.sql explains the SQL side and why no end is missed).

`Waiters` is the hub: one LISTEN connection serves every wait of a process,
however many. A wait LISTENs first (the hub's connection already does), then
calls `sluice.job_await(id)`, which answers the job as it is and registers a
waiter if it has not ended; the job's end then sends its id on
`sluice_job_done`, and the hub wakes whoever waits for it, who reads the job
again. When the LISTEN connection is lost, what was sent meanwhile is lost
too, so on reconnecting every wait reads its job again.

The REST API runs a hub in its own event loop (sluice.http's lifespan). Job
handles of the Python API share one per server, run by a daemon thread with
an event loop of its own (so a sync caller and any number of event loops can
wait through it, and nothing has to be closed by the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

import psycopg
from msgspec import Struct

from sluice.core.jobs import TERMINAL_STATES
from sluice.core.queries import door, sql
from sluice.core.rows import struct_row

log = logging.getLogger("sluice.waiting")

R = TypeVar("R")

#: Job states a wait ends on: the terminal ones, and `skipped` (a DAG node that
#: will not run) where the engine has it.
JOB_ENDED = frozenset((*TERMINAL_STATES, "skipped"))
#: Run states a wait ends on. Named rather than "not running": a run may also
#: be waiting to start (`queued`).
RUN_ENDED = frozenset(("succeeded", "failed", "cancelled"))

JOB_CHANNEL = "sluice_job_done"
RUN_CHANNEL = "sluice_run_done"
# Reconnection backoff of the LISTEN connection, in seconds.
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 5.0


class JobEnd(Struct, frozen=True):
    """A job as a wait left it: ended (`ended`), or not yet when the wait timed out."""

    id: int
    state: str
    result: Any = None
    last_error: str | None = None
    reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in JOB_ENDED


class RunEnd(Struct, frozen=True):
    id: int
    state: str

    @property
    def ended(self) -> bool:
        return self.state in RUN_ENDED


@door("job_await", JobEnd)
async def job_await(conn: psycopg.AsyncConnection[Any], *, id: int) -> JobEnd | None:
    """The job as it is now, its waiter row registered (None: no such job)."""
    async with conn.cursor(row_factory=struct_row(JobEnd)) as cur:
        await cur.execute(sql("job_await"), {"id": id})
        return await cur.fetchone()


@door("run_await", RunEnd)
async def run_await(conn: psycopg.AsyncConnection[Any], *, id: int) -> RunEnd | None:
    """The run as it is now, its waiter row registered (None: no such run)."""
    async with conn.cursor(row_factory=struct_row(RunEnd)) as cur:
        await cur.execute(sql("run_await"), {"id": id})
        return await cur.fetchone()


class JobError(Exception):
    """A job waited for did not succeed: `job_id`, `state`, `last_error`, `reason`."""

    def __init__(self, end: JobEnd, message: str) -> None:
        super().__init__(message)
        self.job_id = end.id
        self.state = end.state
        self.last_error = end.last_error
        self.reason = end.reason


class JobFailed(JobError):
    """The job failed (its attempts ran out, or a handler raised NonRetryableError)."""


class JobCancelled(JobError):
    """The job was cancelled (by a user, or because a job it depends on failed)."""


class RunError(Exception):
    """A run waited for ended `failed` or `cancelled`."""

    def __init__(self, end: RunEnd) -> None:
        super().__init__(f"run {end.id} {end.state}")
        self.run_id = end.id
        self.state = end.state


def job_outcome(end: JobEnd | None, job_id: int, timeout: float | None) -> Any:
    """The job's result when it succeeded; raises what a caller of `result()` gets
    otherwise (LookupError, TimeoutError, JobFailed, JobCancelled)."""
    if end is None:
        raise LookupError(
            f"job {job_id} does not exist (if it was just enqueued: commit the transaction "
            "that enqueued it before waiting for it)"
        )
    if not end.ended:
        raise TimeoutError(f"job {job_id} has not ended after {timeout:g}s (it is {end.state})")
    if end.state == "failed":
        raise JobFailed(end, f"job {job_id} failed: {end.last_error or end.reason}")
    if end.state == "cancelled":
        why = end.reason or "cancelled"
        if end.last_error:
            why += f"; last error: {end.last_error}"
        raise JobCancelled(end, f"job {job_id} was cancelled ({why})")
    return end.result


def run_outcome(end: RunEnd | None, run_id: int, timeout: float | None) -> str:
    if end is None:
        raise LookupError(f"run {run_id} does not exist (or its transaction has not committed)")
    if not end.ended:
        raise TimeoutError(f"run {run_id} has not ended after {timeout:g}s")
    if end.state != "succeeded":
        raise RunError(end)
    return end.state


Connect = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]


class Waiters:
    """Waits for jobs and runs to end. `listen` is the conninfo of the LISTEN
    connection; `connection()` lends a connection for the short reads. The LISTEN
    connection is opened by the first wait and closed after `idle` seconds
    without one."""

    def __init__(
        self,
        listen: str,
        connection: Connect,
        *,
        idle: float | None = 10.0,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._listen_info = listen
        #: Called when the LISTEN connection is closed for want of waits.
        self._on_idle = on_idle
        #: Seconds without a wait after which the LISTEN connection is closed
        #: (None: kept open); the next wait opens it again.
        self._idle = idle
        self._connection = connection
        self._waiting: dict[tuple[str, int], set[asyncio.Event]] = {}
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def waiting(self) -> int:
        """How many waits are under way."""
        return sum(len(events) for events in self._waiting.values())

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def job(self, job_id: int, timeout: float | None) -> JobEnd | None:  # noqa: ASYNC109
        """The job once it has ended, or as it is when `timeout` seconds have passed
        (None: no such job)."""
        row = await self._wait("job", job_id, timeout)
        return row

    async def run(self, run_id: int, timeout: float | None) -> RunEnd | None:  # noqa: ASYNC109
        """The run once it has ended, or as it is after `timeout` seconds (None: no such run)."""
        row = await self._wait("run", run_id, timeout)
        return row

    async def _wait(
        self,
        kind: str,
        key: int,
        timeout: float | None,  # noqa: ASYNC109 - one deadline for the whole wait
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self._start()
        woken = asyncio.Event()
        waiting = self._waiting.setdefault((kind, key), set())
        waiting.add(woken)
        try:
            # Listening first: an end committed after the waiter row is notified,
            # and only to connections already listening.
            if not await _until(self._listening.wait(), deadline, loop):
                return await self._read(kind, key)
            while True:
                woken.clear()
                row = await self._read(kind, key)
                if row is None or _ended(kind, row):
                    return row
                if not await _until(woken.wait(), deadline, loop):
                    return row if deadline is None else await self._read(kind, key)
        finally:
            waiting.discard(woken)
            if not waiting:
                self._waiting.pop((kind, key), None)

    async def _read(self, kind: str, key: int) -> JobEnd | RunEnd | None:
        query = job_await if kind == "job" else run_await
        async with self._connection() as conn:
            return await query(conn, id=key)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            if self._closed:
                raise RuntimeError("these waiters are closed")
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="sluice waiters: LISTEN"
            )

    def _wake(self, kind: str, key: int) -> None:
        for event in self._waiting.get((kind, key), ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiting.values():
            for event in events:
                event.set()

    async def _listen(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._listen_info, autocommit=True, application_name="sluice-waiters"
                ) as conn:
                    await conn.execute(f"LISTEN {JOB_CHANNEL}")
                    await conn.execute(f"LISTEN {RUN_CHANNEL}")
                    self._listening.set()
                    # Whatever ended while nobody listened was not heard: look again.
                    self._wake_all()
                    backoff = _BACKOFF_MIN
                    while not self._idle_stop():
                        async for note in conn.notifies(timeout=self._idle):
                            kind = "job" if note.channel == JOB_CHANNEL else "run"
                            for part in note.payload.split(","):
                                with contextlib.suppress(ValueError):
                                    self._wake(kind, int(part))
                if self._on_idle is not None:
                    await self._on_idle()
                return
            except psycopg.Error as exc:
                self._listening.clear()
                if self._idle_stop():
                    if self._on_idle is not None:
                        await self._on_idle()
                    return
                log.warning("waiters: the LISTEN connection failed (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    def _idle_stop(self) -> bool:
        """True, and the listener given up, when nobody has waited for `idle` seconds.
        Decided without yielding to the loop: a wait that starts afterwards finds no
        listener and starts its own, never one that is closing."""
        if self._idle is None or self._waiting:
            return False
        self._listening.clear()
        self._task = None
        return True


def _ended(kind: str, row: JobEnd | RunEnd) -> bool:
    return row.ended


async def _until(awaitable: Any, deadline: float | None, loop: asyncio.AbstractEventLoop) -> bool:
    """Await `awaitable` until `deadline` (loop time; None: forever); False on timeout."""
    if deadline is None:
        await awaitable
        return True
    try:
        async with asyncio.timeout_at(deadline):
            await awaitable
        return True
    except TimeoutError:
        return False


# --- the hub of the Python API's handles ----------------------------------------------


class _Thread:
    """A daemon thread running an event loop with one Waiters per server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._hubs: dict[str, Waiters] = {}
        threading.Thread(target=self.loop.run_forever, name="sluice-waiters", daemon=True).start()

    def hub(self, conninfo: str) -> Waiters:
        """The waiters of the server at `conninfo` (called in the loop's thread)."""
        hub = self._hubs.get(conninfo)
        if hub is None:
            reader = _Reader(conninfo)
            hub = Waiters(conninfo, reader.connection, on_idle=reader.close)
            self._hubs[conninfo] = hub
        return hub


class _Reader:
    """One connection for the hub's reads, reopened when lost."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, application_name="sluice-waiters"
            )
        try:
            yield self._conn
        except psycopg.OperationalError:
            await self._conn.close()
            raise

    async def close(self) -> None:
        """Close the connection (the hub went idle); the next read opens a new one."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


_THREAD: _Thread | None = None
_THREAD_LOCK = threading.Lock()


def _in_hub(conninfo: str, kind: str, key: int, timeout: float | None) -> Any:
    """A concurrent.futures.Future of the wait, run by the handles' hub thread."""
    global _THREAD
    with _THREAD_LOCK:
        if _THREAD is None:
            _THREAD = _Thread()
    thread = _THREAD

    async def wait() -> Any:
        hub = thread.hub(conninfo)
        return await (hub.job(key, timeout) if kind == "job" else hub.run(key, timeout))

    return asyncio.run_coroutine_threadsafe(wait(), thread.loop)


# --- handles ----------------------------------------------------------------------------


class JobHandle(Generic[R]):
    """A job enqueued from Python: its `id`, and `result()` to wait for its end."""

    __slots__ = ("_conninfo", "_read", "id")

    def __init__(self, job_id: int, conninfo: str, read: Callable[[Any], R] | None = None) -> None:
        self.id = job_id
        self._conninfo = conninfo
        self._read = read

    def __repr__(self) -> str:
        return f"<{type(self).__name__} job {self.id}>"

    def _outcome(self, end: JobEnd | None, timeout: float | None) -> R:
        result = job_outcome(end, self.id, timeout)
        return result if self._read is None else self._read(result)

    def result(self, timeout: float | None = None) -> R:
        """Wait until the job ends (at most `timeout` seconds; None: no limit) and
        return what its handler returned, read back into its return annotation.
        Raises JobFailed or JobCancelled (with the job's `last_error`), TimeoutError,
        or LookupError when no such job is visible (not committed yet?)."""
        end = _in_hub(self._conninfo, "job", self.id, timeout).result()
        return self._outcome(end, timeout)


# `result(timeout=...)` is the public name (SPEC), hence ASYNC109's exceptions below.
class AsyncJobHandle(JobHandle[R]):
    """A job enqueued through an async connection: `await handle.result()`."""

    __slots__ = ()

    async def result(self, timeout: float | None = None) -> R:  # type: ignore[override]  # noqa: ASYNC109
        """As JobHandle.result, awaited."""
        end = await asyncio.wrap_future(_in_hub(self._conninfo, "job", self.id, timeout))
        return self._outcome(end, timeout)


class RunHandle:
    """A DAG run started from Python: its `id`, and `result()` to wait for its end."""

    __slots__ = ("_conninfo", "id")

    def __init__(self, run_id: int, conninfo: str) -> None:
        self.id = run_id
        self._conninfo = conninfo

    def __repr__(self) -> str:
        return f"<{type(self).__name__} run {self.id}>"

    def result(self, timeout: float | None = None) -> str:
        """Wait until the run ends: `"succeeded"`, or RunError (failed, cancelled),
        TimeoutError, LookupError."""
        end = _in_hub(self._conninfo, "run", self.id, timeout).result()
        return run_outcome(end, self.id, timeout)


class AsyncRunHandle(RunHandle):
    __slots__ = ()

    async def result(self, timeout: float | None = None) -> str:  # type: ignore[override]  # noqa: ASYNC109
        """As RunHandle.result, awaited."""
        end = await asyncio.wrap_future(_in_hub(self._conninfo, "run", self.id, timeout))
        return run_outcome(end, self.id, timeout)
