"""Outcomes of finished attempts, buffered and written in batches.

Handlers finish one by one; their outcomes wait here until `batch` are waiting
or the oldest has waited `interval`, then go to the database in one
`job_complete_many` and/or one `job_fail_many`, so throughput is not bounded by
one commit per job. Both only touch jobs still running under this worker's lease
and attempt, so a batch can be sent again after a connection error, and a late
completion for a rescued or cancelled job changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from sluice.core.logging import error_line
from sluice.core.queries import Q
from sluice.worker.meters import Meters
from sluice.worker.writer import TRANSIENT, Writer, retry_transient

log = logging.getLogger("sluice.worker")

# The most outcomes sent in one statement: big enough to amortise the round trip,
# small enough to keep row locks brief.
MAX_STATEMENT = 1000


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
        # Successes: (id, attempt, result as JSON text or None, output, queue, task).
        # Failures: (id, attempt, error, retryable, outcome, output, queue, task).
        self._done: list[tuple[int, int, str | None, str | None, str, str]] = []
        self._failed: list[tuple[int, int, str, bool, str, str | None, str, str]] = []
        self._flushing: list[int] = []
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
        self.on_settled: Callable[[list[tuple[int, int]]], None] = lambda keys: None
        #: Whether more outcomes may come soon (jobs still run here). When none
        #: can, waiting out `interval` would only delay the write: a DAG child
        #: released by this completion would start `interval` later.
        self.more_expected: Callable[[], bool] = lambda: True

    # -- buffering (called by the executor) ----------------------------------

    def succeed(
        self,
        job_id: int,
        attempt: int,
        result: str | None,
        output: str | None,
        queue: str,
        task: str,
    ) -> None:
        self._done.append((job_id, attempt, result, _text(output), queue, task))
        self._added()

    def fail(
        self,
        job_id: int,
        attempt: int,
        error: str,
        retryable: bool,
        outcome: str,
        output: str | None,
        queue: str,
        task: str,
    ) -> None:
        self._failed.append(
            (job_id, attempt, _text(error), retryable, outcome, _text(output), queue, task)
        )
        self._added()

    def _added(self) -> None:
        self._idle.clear()
        if not self._wake.is_set():
            self._wake.set()
        if len(self._done) + len(self._failed) >= self._batch:
            self._full.set()

    def pending(self) -> int:
        """Outcomes not yet written (buffered or being flushed)."""
        return len(self._done) + len(self._failed) + len(self._flushing)

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
            # Lock rows in id order, as the engine's own functions do.
            done.sort()
            failed.sort()
            self._flushing = [o[0] for o in done] + [o[0] for o in failed]
            taken = [(o[0], o[1]) for o in done] + [(o[0], o[1]) for o in failed]
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
                self._flushing = []
                self.on_settled(taken)

    async def _write_apart(self, done: list[tuple], failed: list[tuple]) -> None:
        for item in done:
            try:
                await self._write_retrying([item], [])
            except TRANSIENT:
                raise
            except psycopg.DatabaseError as exc:
                job_id, attempt, _, output, queue, task = item
                error = f"the result could not be stored: {error_line(exc)}"
                failed.append((job_id, attempt, error, False, "failed", output, queue, task))
        for item in failed:
            try:
                await self._write_retrying([], [item])
            except TRANSIENT:
                raise
            except psycopg.DatabaseError as exc:
                log.error("could not record the outcome of job %s: %s", item[0], error_line(exc))

    async def _write_retrying(self, done: list[tuple], failed: list[tuple]) -> None:
        await retry_transient(
            "writing job outcomes",
            functools.partial(self._write, done, failed),
            deadline=self.deadline,
        )

    async def _write(self, done: list[tuple], failed: list[tuple]) -> None:
        async with self._writer.connection() as conn:
            completed = await self._complete(conn, done) if done else []
            decided = await self._fail(conn, failed) if failed else []
        self._account(done, failed, completed, decided)

    async def _complete(self, conn: Any, done: list[tuple]) -> list[dict[str, Any]]:
        return await Q.job_complete_many(
            conn,
            worker_id=self._worker_id,
            ids=[o[0] for o in done],
            attempts=[o[1] for o in done],
            results=[o[2] for o in done],
            outputs=[o[3] for o in done],
        )

    async def _fail(self, conn: Any, failed: list[tuple]) -> list[dict[str, Any]]:
        return await Q.job_fail_many(
            conn,
            worker_id=self._worker_id,
            ids=[o[0] for o in failed],
            attempts=[o[1] for o in failed],
            errors=[o[2] for o in failed],
            retryable=[o[3] for o in failed],
            outcomes=[o[4] for o in failed],
            outputs=[o[5] for o in failed],
        )

    def _account(
        self, done: list[tuple], failed: list[tuple], completed: list[dict], decided: list[dict]
    ) -> None:
        ignored: list[int] = []
        if len(completed) != len(done):
            kept = {row["id"] for row in completed}
            ignored += [o[0] for o in done if o[0] not in kept]
        states = {row["id"]: row["state"] for row in decided}
        for job_id, *_, queue, task in failed:
            state = states.get(job_id)
            if state is None:
                ignored.append(job_id)
            elif state == "failed":
                self._meters.task(queue, task).dead_lettered.inc()
            else:
                self._meters.task(queue, task).retries.inc()
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


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters (binary output, odd error messages)."""
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\\0")
    return value
