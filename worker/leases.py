"""The leases this worker holds, and the keeper that renews them from a thread
of its own.

A lease names one attempt: (job id, attempt). It is held from the claim until
the attempt's outcome is written (or the database says the attempt is no
longer ours), and renewed every `SLUICE_HEARTBEAT_INTERVAL` with one
`sluice.job_heartbeat` statement that renews only the very attempts named. An
attempt missing from the answer was cancelled, or rescued while this worker
stalled: it is stopped here at once.

Why a thread. Async handlers run on the worker's event loop; one that calls
blocking code (`time.sleep`, a synchronous HTTP client, a long computation)
stops the loop, and a heartbeat on the loop would stop with it: the leases
would expire, the jobs be rescued and run a second time while the first run
goes on. The keeper runs its own event loop, with its own connection, in a
thread, so a blocked loop does not stop it. It also watches the worker's loop
while jobs run: a ping every `PING` seconds, answered by a callback on that
loop. While the loop does not answer (blocked for `STALL` seconds or more), the
keeper reports
where it is stuck (job, task and line), and renews only the attempts still
within their own timeout, so a handler that never returns loses its lease at
its timeout and is rescued like one whose worker died. Once the loop runs again
the worker ends every attempt past its timeout itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable

import psycopg

from sluice.core import protocol
from sluice.core.db import connect
from sluice.core.protocol import Key
from sluice.worker.retrying import TRANSIENT, describe

log = logging.getLogger("sluice.worker")

# How often the keeper pings the worker's event loop, and how long the loop may
# take to answer before it counts as blocked.
PING = 0.1
STALL = 1.0
# The first retry after a failed renewal (doubling up to the heartbeat interval).
RETRY_FIRST = 0.1


class Leases:
    """The attempts this worker holds in the database, each with its deadline
    (time.monotonic() at which its timeout ends). Shared by the event loop,
    which holds and settles them, and the keeper thread, which renews them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Key, float] = {}

    def hold(self, leases: Iterable[tuple[Key, float]]) -> None:
        """Hold these attempts, each until its deadline (when the loop is blocked)."""
        with self._lock:
            self._held.update(leases)

    def settle(self, keys: Iterable[Key]) -> None:
        """These attempts are no longer held (outcome written, or not ours any more)."""
        with self._lock:
            for key in keys:
                self._held.pop(key, None)

    def snapshot(self) -> dict[Key, float]:
        with self._lock:
            return dict(self._held)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._held

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)


class LeaseKeeper:
    """Renews the held leases every `interval` from its own thread and connection."""

    def __init__(
        self,
        url: str,
        leases: Leases,
        *,
        worker_id: str,
        interval: float,
        lease_ttl: float,
        on_lost: Callable[[list[Key]], None],
        prepare: bool = True,
    ) -> None:
        self._url = url
        self._leases = leases
        self._worker_id = worker_id
        self._interval = interval
        self._lease = dt.timedelta(seconds=lease_ttl)
        self._on_lost = on_lost
        self._prepare = prepare
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        # Set in start(): the worker's loop and the thread that runs it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # Set in the keeper's thread.
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._conn: psycopg.AsyncConnection | None = None
        # The ping in flight (monotonic time it was sent), None once answered.
        # Written by the keeper when sent and by the worker's loop when answered;
        # one ping at a time, so the two never write at once.
        self._ping_sent: float | None = None
        self._stall_reported = False
        #: Renewal rounds done (for tests).
        self.beats = 0

    # -- the worker's side ---------------------------------------------------

    def start(self) -> None:
        """Start the keeper thread (call from the worker's event loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._main, name="sluice-leases", daemon=True)
        self._thread.start()
        self._started.wait()

    async def stop(self) -> None:
        """Stop renewing and wait for the thread to end."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        own, stopping = self._own_loop, self._stopping
        if own is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop already ended
                own.call_soon_threadsafe(stopping.set)
        await asyncio.to_thread(thread.join, 10.0)

    def stalled_for(self) -> float:
        """How long the worker's loop has not answered the keeper's ping (0 when it has)."""
        sent = self._ping_sent
        return 0.0 if sent is None else max(0.0, time.monotonic() - sent)

    def _pong(self, sent: float) -> None:
        """The ping's answer, run on the worker's loop."""
        lag = time.monotonic() - sent
        self._ping_sent = None
        if lag >= STALL:
            from sluice.core.metrics import EVENT_LOOP_STALLS  # not on the way to the first claim

            EVENT_LOOP_STALLS.inc()
            log.warning(
                "the event loop was blocked for %.1fs: an async handler ran blocking code "
                "(run it in a sync handler, or with asyncio.to_thread); every other job, "
                "claim and completion of this worker waited",
                lag,
            )
        self._stall_reported = False

    # -- the keeper's thread -------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException:  # pragma: no cover - a bug: say so, the worker carries on
            log.exception("the lease keeper stopped")
            self._started.set()

    async def _run(self) -> None:
        self._own_loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        self._started.set()
        watch = asyncio.create_task(self._watch())
        # After a failure, the next try comes sooner than the next round: once the
        # database is back (a restart, a failover), leases are renewed within a
        # moment, long before the maintenance leader may rescue them.
        retry = RETRY_FIRST
        try:
            while not stopping.is_set():
                wait = self._interval
                try:
                    # A renewal that takes half a lease is worth nothing: give up on
                    # that connection (a host gone silent) and make another.
                    async with asyncio.timeout(max(self._lease.total_seconds() / 2, 1.0)):
                        await self.beat()
                    retry = RETRY_FIRST
                except (*TRANSIENT, TimeoutError) as exc:
                    log.warning(
                        "could not renew leases (retrying in %.1fs): %s",
                        min(retry, wait),
                        describe(exc) if isinstance(exc, TRANSIENT) else "timed out",
                    )
                    await self._disconnect()
                    wait, retry = min(retry, wait), retry * 2
                except Exception:
                    log.exception("could not renew leases (retrying)")
                    await self._disconnect()
                    wait, retry = min(retry, wait), retry * 2
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await stopping.wait()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            await self._disconnect()

    async def beat(self) -> None:
        """Renew once; report the attempts that are no longer ours."""
        held = self._leases.snapshot()
        if not held:
            return
        now = time.monotonic()
        stalled = self.stalled_for() >= STALL
        # While the loop is blocked, an attempt past its timeout is not renewed: if
        # the loop never comes back, the rescuer takes the job when the lease ends.
        keys = sorted(k for k, deadline in held.items() if not stalled or deadline > now)
        if not keys:
            return
        if self._conn is None or self._conn.closed:
            self._conn = await connect(
                self._url, prepare=self._prepare, application_name="sluice-leases"
            )
        renewed = await protocol.job_heartbeat(
            self._conn, worker_id=self._worker_id, held=keys, lease=self._lease
        )
        self.beats += 1
        lost = [k for k in keys if k not in renewed]
        if lost:
            self._leases.settle(lost)
            self._to_loop(self._on_lost, lost)

    async def _watch(self) -> None:
        """Ping the worker's loop while it holds leases (only a handler can block
        it for long); report once per stall where it is blocked."""
        while True:
            sent = self._ping_sent
            if sent is None and len(self._leases):
                self._ping_sent = time.monotonic()
                self._to_loop(self._pong, self._ping_sent)
            elif sent is not None and not self._stall_reported and time.monotonic() - sent >= STALL:
                self._stall_reported = True
                log.warning(
                    "the event loop has been blocked for %.1fs%s; leases are kept by the "
                    "lease keeper until each job's timeout",
                    time.monotonic() - sent,
                    self._blocker(),
                )
            # Idle (no lease held, nothing running), a slower pace is enough.
            await asyncio.sleep(PING if len(self._leases) else STALL)

    def _blocker(self) -> str:
        """` by job 42 attempt 1, at tasks.py:17 in build`: what the loop runs now."""
        text = ""
        task = None
        if self._loop is not None:
            with contextlib.suppress(Exception):
                task = asyncio.current_task(self._loop)
        if task is not None:
            text += f" by {task.get_name()}"
        frame = sys._current_frames().get(self._loop_thread)
        if frame is not None:
            code = frame.f_code
            text += f", at {code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} in {code.co_name}"
        return text

    def _to_loop(self, callback: Callable[..., object], *args: object) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the worker's loop is closed
                self._loop.call_soon_threadsafe(callback, *args)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
