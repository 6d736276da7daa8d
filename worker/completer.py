"""Outcomes of finished attempts, buffered and written in batches.

Handlers finish one by one; their outcomes (`Succeeded` and `Failed` values of
sluice.core.protocol, each holding its claimed job) wait here until `batch` are
waiting or the oldest has waited `interval`, then go to the database in one
`job_complete_many` and/or one `job_fail_many`, so throughput is not bounded by
one commit per job. Both only touch jobs still running under this worker's lease
and attempt, so a batch can be sent again after a connection error, and a late
completion for a rescued or cancelled job changes nothing.

While the database is away or read-only (a failover), a batch is retried until
it goes through, and outcomes that arrive meanwhile wait behind it: an outage
delays outcomes, it never turns one into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from operator import attrgetter

import psycopg

from sluice.core import protocol
from sluice.core.logging import error_line
from sluice.core.protocol import Failed, Key, Succeeded
from sluice.worker.meters import Meters
from sluice.worker.retrying import TRANSIENT, retry_transient
from sluice.worker.writer import Writer

log = logging.getLogger("sluice.worker")

# The most outcomes sent in one statement: big enough to amortise the round trip,
# small enough to keep row locks brief.
MAX_STATEMENT = 1000

# Rows are locked in id order, as the engine's own functions lock them.
_BY_ID = attrgetter("job.id")


class Completer:
    """Buffers outcomes and flushes them on size or time."""

    def __init__(
        self,
        writer: Writer,
        worker_id: str,
        meters: Meters,
        *,
        batch: int = 100,
        interval: float = 0.005,
    ) -> None:
        self._writer = writer
        self._worker_id = worker_id
        self._meters = meters
        self._batch = batch
        self._interval = interval
        self._done: list[Succeeded] = []
        self._failed: list[Failed] = []
        self._flushing = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.deadline: float | None = None
        #: Called with the ids of outcomes the database ignored (job no longer ours).
        self.on_ignored: Callable[[list[int]], None] | None = None
        #: Called with the (id, attempt) of outcomes no longer held here: written,
        #: ignored, or given up (their leases are then left to expire).
        self.on_settled: Callable[[list[Key]], None] = lambda keys: None
        #: Whether more outcomes may come soon (jobs still run here). When none
        #: can, waiting out `interval` would only delay the write: a DAG child
        #: released by this completion would start `interval` later.
        self.more_expected: Callable[[], bool] = lambda: True

    # -- buffering (called by the executor) ----------------------------------

    def record(self, outcome: Succeeded | Failed) -> None:
        """Buffer one attempt's outcome for the next batch."""
        if type(outcome) is Succeeded:
            self._done.append(outcome)
        else:
            self._failed.append(outcome)  # type: ignore[arg-type]
        self._idle.clear()
        if not self._wake.is_set():
            self._wake.set()
        if len(self._done) + len(self._failed) >= self._batch:
            self._full.set()

    def pending(self) -> int:
        """Outcomes not yet written (buffered or being flushed)."""
        return len(self._done) + len(self._failed) + self._flushing

    # -- flushing -----------------------------------------------------------

    async def run(self) -> None:
        """Flush until closed and drained."""
        while True:
            if not self._done and not self._failed:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if (
                not self._closing
                and len(self._done) + len(self._failed) < self._batch
                and self.more_expected()
            ):
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._full.wait()
            try:
                await self.flush()
            except Exception:
                # Past the shutdown deadline, or a bug: these jobs stay running in
                # the database until their leases expire, then they are rescued.
                log.exception(
                    "could not write job outcomes; the jobs will be retried "
                    "after their leases expire"
                )

    async def flush(self) -> None:
        """Write everything buffered now (retrying transient errors)."""
        while self._done or self._failed:
            done, self._done = self._done[:MAX_STATEMENT], self._done[MAX_STATEMENT:]
            failed, self._failed = self._failed[:MAX_STATEMENT], self._failed[MAX_STATEMENT:]
            done.sort(key=_BY_ID)
            failed.sort(key=_BY_ID)
            self._flushing = len(done) + len(failed)
            taken = [o.job.key for o in done] + [o.job.key for o in failed]
            try:
                # Each statement retried on its own: a retry never repeats one that committed.
                if done:
                    await self._write_retrying(done, [])
                    done = []
                if failed:
                    await self._write_retrying([], failed)
            except TRANSIENT:
                raise
            except psycopg.DatabaseError as exc:
                # One outcome the database refuses (a result jsonb cannot hold) must
                # not take the rest of the batch with it.
                log.warning(
                    "a batch of outcomes was refused (%s); writing them one by one", error_line(exc)
                )
                await self._write_apart(done, failed)
            finally:
                self._flushing = 0
                self.on_settled(taken)

    async def _write_apart(self, done: list[Succeeded], failed: list[Failed]) -> None:
        for outcome in done:
            try:
                await self._write_retrying([outcome], [])
            except TRANSIENT:
                raise
            except psycopg.DatabaseError as exc:
                error = f"the result could not be stored: {error_line(exc)}"
                failed.append(Failed(outcome.job, error, False, outcome.output))
        for failure in failed:
            try:
                await self._write_retrying([], [failure])
            except TRANSIENT:
                raise
            except psycopg.DatabaseError as exc:
                log.error(
                    "could not record the outcome of job %s: %s", failure.job.id, error_line(exc)
                )

    async def _write_retrying(self, done: list[Succeeded], failed: list[Failed]) -> None:
        await retry_transient(
            "writing job outcomes",
            functools.partial(self._write, done, failed),
            deadline=self.deadline,
        )

    async def _write(self, done: list[Succeeded], failed: list[Failed]) -> None:
        worker = self._worker_id
        async with self._writer.connection() as conn:
            completed = (
                await protocol.job_complete_many(conn, worker_id=worker, outcomes=done)
                if done
                else []
            )
            decided = (
                await protocol.job_fail_many(conn, worker_id=worker, outcomes=failed)
                if failed
                else []
            )
        self._account(done, failed, completed, decided)

    def _account(
        self,
        done: list[Succeeded],
        failed: list[Failed],
        completed: list[int],
        decided: list[protocol.Decision],
    ) -> None:
        ignored: list[int] = []
        if len(completed) != len(done):
            kept = set(completed)
            ignored += [o.job.id for o in done if o.job.id not in kept]
        states = {d.id: d.state for d in decided}
        for failure in failed:
            job = failure.job
            state = states.get(job.id)
            if state is None:
                ignored.append(job.id)
            elif state == "failed":
                self._meters.task(job.queue, job.task).dead_lettered.inc()
            else:
                self._meters.task(job.queue, job.task).retries.inc()
        if ignored:
            log.info(
                "ignored %d late outcome(s): the jobs are no longer this worker's "
                "(cancelled, or rescued after a lost lease)",
                len(ignored),
                extra={"job_ids": ignored[:20]},
            )
            if self.on_ignored is not None:
                self.on_ignored(ignored)

    async def drain(self) -> None:
        """Stop taking the flush loop's time: write what is left, then return."""
        self._closing = True
        self._wake.set()
        self._full.set()
        await self._idle.wait()
