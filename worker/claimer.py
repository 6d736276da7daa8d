"""Claims ready jobs into free slots.

A claim asks for as many jobs as there are free slots, in one statement. A full
batch means more are likely waiting, so the claimer claims again as soon as
slots free up; a short one means the queues are drained, and it sleeps until a
notification (or the fallback poll) says otherwise.

While it drains one queue in full batches, each claim starts where the last one
ended (job_claim's p_after) rather than at the head of the ready index, where
the entries of jobs just claimed may not be cleaned up yet (and are not at all
while some long transaction holds vacuum back). Any notification, the fallback
poll and a short batch drop that bound, so a job that becomes ready behind it
(a DAG child, a lower priority value) is claimed as soon as it would be anyway.
A worker taking every queue (`*`) claims across the queues that have ready
jobs, with no bound.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.core.jobs import ANY_QUEUE
from sluice.core.logging import error_line
from sluice.core.protocol import ClaimedJob
from sluice.worker.completer import Completer
from sluice.worker.executor import Executor
from sluice.worker.leases import Leases
from sluice.worker.retrying import TRANSIENT, describe, pooled, read_only

log = logging.getLogger("sluice.worker")

# While an inserter that has not seen this worker's waiter rows is still open, the
# barrier fails: claim again after this delay, doubling up to the last.
_BARRIER_FIRST, _BARRIER_LAST = 0.001, 0.05


class Claimer:
    """The claim loop of one worker."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        executor: Executor,
        completer: Completer,
        *,
        worker_id: str,
        queues: tuple[str, ...],
        concurrency: int,
        lease_ttl: float,
        poll_interval: float,
        backlog_limit: int,
        leases: Leases,
        tasks: tuple[str, ...] | None = None,
        registered: asyncio.Event | None = None,
        answered: asyncio.Event | None = None,
    ) -> None:
        self._pool = pool
        # Set once the worker row exists (None: it does already). The claimer claims
        # before it, but writes no waiter row: worker_prune deletes a dead worker's
        # waiter rows with its row, so rows written first would outlive a worker
        # that died before registering, and draw NOTIFYs for nobody.
        self._registered = registered
        self._stopped = asyncio.Event()
        # Every attempt this worker holds, until its outcome is written.
        self._leases = leases
        # A claim failed with its connection: it may have committed all the same,
        # its answer lost (see _hand_back_unanswered).
        self._unanswered = False
        self._executor = executor
        self._completer = completer
        self._worker_id = worker_id
        self._queues = list(queues)
        self._queue_set = frozenset(queues)
        self._every_queue = ANY_QUEUE in self._queue_set
        # One named queue: a full claim may bound the next (job_claim's p_after).
        self._one_queue = len(self._queue_set) == 1 and not self._every_queue
        # The tasks this worker has handlers for: it claims no other (None: any).
        self._tasks = list(tasks) if tasks is not None else None
        self._concurrency = concurrency
        self._lease = dt.timedelta(seconds=lease_ttl)
        self._poll_interval = poll_interval
        # Outcomes waiting to be written past which claiming waits (the database is slow).
        self._backlog_limit = backlog_limit
        self._wake = asyncio.Event()
        # The job where the last full claim ended (by priority, run_at, id), or
        # None; and a counter of resets, so a claim in flight during a reset sets
        # no bound.
        self._after: ClaimedJob | None = None
        self._resets = 0
        # There may be ready jobs: claim when slots allow. True at start (catch up).
        self._pending = True
        # Inserters notify a queue only while a worker waits on it (sluice.notify_ready):
        # this worker's waiter rows are written (waiting), and the barrier has
        # passed since (armed), so a NOTIFY will wake it.
        self._waiting = False
        self._armed = False
        self._barrier_delay = _BARRIER_FIRST
        self._stopping = False
        self.paused = False
        self.claimed = 0
        self.notified = 0
        #: A claim is in flight (a pause that arrives now applies to the next one).
        self.claiming = False
        #: Set once the first claim has answered or failed: the worker's start-up
        #: opens its other connections then, not while the claim runs.
        self.answered = asyncio.Event() if answered is None else answered

    @property
    def armed(self) -> bool:
        """Inserters will notify this worker: its waiter rows are written and the
        barrier has passed since."""
        return self._armed

    # -- signals -------------------------------------------------------------

    def takes(self, queue: object) -> bool:
        """This worker claims from `queue` (one of its queues, or it takes every queue)."""
        return self._every_queue or queue in self._queue_set

    def notify(self, queue: str) -> None:
        """Ready jobs arrived in `queue` (a NOTIFY)."""
        if self.takes(queue):
            self.notified += 1
            self._reset_bound()
            self._pending = True
            self._wake.set()

    def catch_up(self) -> None:
        """Claim as if notified (after a reconnect, a resume, or at start)."""
        self._reset_bound()
        self._pending = True
        self._wake.set()

    def _reset_bound(self) -> None:
        self._after = None
        self._resets += 1

    def slot_freed(self) -> None:
        if self._pending:
            self._wake.set()

    def set_paused(self, paused: bool) -> None:
        if paused != self.paused:
            log.info("worker %s", "paused: claiming stopped" if paused else "resumed")
        self.paused = paused
        if not paused:
            self.catch_up()

    def stop(self) -> None:
        """Stop after the claim in flight, if any (a claim is never abandoned
        half-way: its jobs would sit leased to nobody until the lease expired)."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()

    # -- the loop ------------------------------------------------------------

    def _free(self) -> int:
        return self._concurrency - len(self._executor.running)

    async def run(self) -> None:
        error_delay = 0.1
        while not self._stopping:
            free = self._free()
            if self._completer.pending() > self._backlog_limit:
                # Outcomes are being written slower than jobs finish: let them catch up.
                await asyncio.sleep(0.005)
                continue
            if self._pending and free > 0 and not self.paused:
                self._pending = False
                self.claiming = True
                try:
                    if self._unanswered:
                        await self._hand_back_unanswered()
                    rows = await self._claim(free, self._start)
                except errors.SerializationFailure as exc:
                    # Rolled back whole: a row the claim's snapshot saw was moved to
                    # history meanwhile (docs/state-machine.md, "Moved rows"), more
                    # often than protocol.job_claim runs it again itself. Nothing was
                    # claimed and nothing is wrong: claim again at once, without the
                    # back-off.
                    self.claiming = False
                    self._pending = True
                    log.debug("claim met a moved row, claiming again: %s", error_line(exc))
                    continue
                except psycopg.Error as exc:
                    # A lost connection, a read-only server (a failover), or a claim
                    # the database refused (a row no CHECK kept out): nothing was
                    # claimed. Never the end of the worker.
                    self.claiming = False
                    self._pending = True
                    self._reset_bound()
                    transient = isinstance(exc, TRANSIENT)
                    self._unanswered |= transient and not read_only(exc)
                    log.log(
                        logging.WARNING if transient else logging.ERROR,
                        "claim failed, retrying in %.1fs: %s",
                        error_delay,
                        describe(exc) if transient else error_line(exc),
                    )
                    await asyncio.sleep(error_delay)
                    error_delay = min(error_delay * 2, 5.0)
                    continue
                finally:
                    self.answered.set()
                self.claiming = False
                error_delay = 0.1
                if len(rows) >= free:
                    # Full: the next claim follows without a NOTIFY.
                    self._pending = True
                    if self._waiting:
                        await self._set_busy()
                elif not self._pending and not self._armed:
                    await self._get_ready_to_sleep()
                # Short, with a NOTIFY heard during the claim: claim again and stay
                # registered. Only a full claim unregisters: an idle worker that did
                # so here, then was paused, would hear of no job until resumed.
                continue
            self._wake.clear()
            idle = free > 0 and not self.paused and not self._pending
            try:
                if idle:
                    # asyncio.timeout, not wait_for: no extra task on the wake-up path.
                    async with asyncio.timeout(self._poll_interval):
                        await self._wake.wait()
                else:
                    await self._wake.wait()
            except TimeoutError:
                self._reset_bound()
                self._pending = True

    async def _hand_back_unanswered(self) -> None:
        """After a claim failed with its connection: the claim may have committed
        with the answer lost on the way, leaving jobs leased to this worker that
        it never started. Those are the jobs the database says it runs and it does
        not hold; hand them back at once rather than leave them to wait out their
        lease for the rescuer. Nothing else can be among them: only this loop
        claims for this worker, and every attempt it started is held until its
        outcome is written."""
        async with pooled(self._pool) as conn:
            running = await protocol.worker_running_jobs(conn, worker_id=self._worker_id)
            unknown = [key for key in running if key not in self._leases]
            if unknown:
                released = await protocol.job_release_unanswered(
                    conn, worker_id=self._worker_id, attempts=unknown
                )
                log.warning(
                    "handed back %d job(s) of a claim whose answer was lost: %s",
                    len(released),
                    ", ".join(map(str, released)),
                )
        self._unanswered = False

    async def _get_ready_to_sleep(self) -> None:
        """Before sleeping on LISTEN after a short claim, make sure inserters will
        notify this worker (the protocol of sluice.notify_ready): write its waiter
        rows, pass the barrier, then claim once more."""
        if self._registered is not None and not self._registered.is_set():
            await _first(self._registered, self._stopped)
            self._pending = True
            return
        try:
            if not self._waiting:
                async with pooled(self._pool) as conn:
                    await protocol.worker_waiting(conn, id=self._worker_id, queues=self._queues)
                self._waiting = True
                self._barrier_delay = _BARRIER_FIRST
            async with pooled(self._pool) as conn:
                passed = await protocol.worker_wait_barrier(conn, queues=self._queues)
        except psycopg.Error as exc:
            # The fallback poll still finds the jobs; try again at the next short claim.
            log.warning("could not register for wake-ups: %s", error_line(exc))
            return
        if passed:
            self._armed = True
        else:
            # An inserter is between its probe and its commit: its jobs show up soon.
            await asyncio.sleep(self._barrier_delay)
            self._barrier_delay = min(self._barrier_delay * 2, _BARRIER_LAST)
        self._pending = True

    async def _set_busy(self) -> None:
        """A full claim: the next one follows without a NOTIFY, so inserters need
        not notify this worker."""
        try:
            async with pooled(self._pool) as conn:
                await protocol.worker_busy(conn, id=self._worker_id)
        except psycopg.Error as exc:
            log.warning("could not unregister from wake-ups: %s", error_line(exc))
            return
        self._waiting = self._armed = False

    def forget_waiting(self) -> None:
        """The worker's row was registered anew (its waiter rows went with the old one)."""
        self._waiting = self._armed = False
        self.catch_up()

    def _start(self, jobs: list[ClaimedJob]) -> None:
        self.claimed += self._executor.start(jobs)

    async def _claim(
        self, limit: int, hand_over: Callable[[list[ClaimedJob]], None] | None = None
    ) -> list[ClaimedJob]:
        """Claim up to `limit` jobs; with `hand_over`, pass them to it (to start them)
        as soon as they are in, before anything else is done."""
        after, resets = self._after, self._resets
        async with pooled(self._pool) as conn:
            jobs = await protocol.job_claim(
                conn,
                worker_id=self._worker_id,
                queues=self._queues,
                limit=limit,
                lease=self._lease,
                after_priority=None if after is None else after.priority,
                after_run_at=None if after is None else after.run_at,
                after_id=None if after is None else after.id,
                tasks=self._tasks,
            )
            if jobs and hand_over is not None:
                # The jobs' tasks take their first step (a handler's first line) before
                # the connection goes back to the pool and this loop does its
                # bookkeeping: that is on the way from an INSERT to its handler
                # starting, they are not (issue 15).
                hand_over(jobs)
                await asyncio.sleep(0)
        if resets == self._resets:
            # A full batch from one named queue: the next claim may start past it. A short
            # one may have passed over jobs another claimer held: start at the head.
            full = len(jobs) >= limit and self._one_queue
            if full and not any(j.problem is not None for j in jobs):
                self._after = max(jobs, key=_position)
            else:
                self._after = None
        return jobs


async def _first(*events: asyncio.Event) -> None:
    """Until one of `events` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _position(job: ClaimedJob) -> tuple:
    """Where a job stands in the claim's order (the ready index's)."""
    return (job.priority, job.run_at, job.id)
