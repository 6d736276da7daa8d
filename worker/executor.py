"""Runs claimed jobs: one asyncio task per attempt, bounded by its timeout,
stoppable by a cancel. The executor never writes SQL: outcomes go to the completer.

One execution per (job, attempt), and never two attempts of one job at once in
this process. After a stall past its lease (the process was stopped, or an
async handler blocked the event loop), a worker can claim again a job it still
runs: the database rescued the old attempt (it counts as failed, and its
outcome would be ignored) and handed the job out anew. The new attempt is the
only one whose outcome counts, so the old one is stopped, and the new one
starts its handler only once the old one has ended (thread included, for a sync
handler), within the new attempt's timeout. Refusing the new claim instead
would hand the job back to be claimed again, quite possibly by this same
worker, while the old attempt's work is thrown away anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sluice.core.logging import attempt_var, job_id_var, run_id_var
from sluice.core.protocol import Cancelled, ClaimedJob, Failed, Key, Outcome, Released, Succeeded
from sluice.worker.completer import Completer
from sluice.worker.context import JobContext, NonRetryableError, TaskError
from sluice.worker.leases import Leases
from sluice.worker.meters import Meters
from sluice.worker.registry import Registry
from sluice.worker.resources import Resources

log = logging.getLogger("sluice.worker")

# Longest error text kept per attempt.
ERROR_LIMIT = 2000


class Execution:
    """An attempt being run here, and why it was stopped (None while it runs freely)."""

    __slots__ = (
        "_waiter",
        "ctx",
        "deadline",
        "ended",
        "expired",
        "job",
        "started",
        "stop_reason",
        "task",
        "thread",
        "timeout",
    )

    def __init__(self, ctx: JobContext, timeout: float, deadline: Deadline) -> None:
        self.job = ctx.job
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        #: A sync handler's call in the thread pool (it may outlive the task).
        self.thread: Future[Any] | None = None
        self.stop_reason: str | None = None
        #: True once its task has begun to run (a task cancelled before that
        #: would never run its clean-up: it is left to see `stop_reason`).
        self.started = False
        #: Seconds the attempt may take, and the timer that ends it then.
        self.timeout = timeout
        self.deadline = deadline
        #: True once its timeout ended it (the handler had not returned).
        self.expired = False
        #: True once the handler has returned, in its thread too.
        self.ended = False
        # Made only for a newer attempt that waits for this one (rare).
        self._waiter: asyncio.Event | None = None

    async def wait_ended(self) -> None:
        if not self.ended:
            if self._waiter is None:
                self._waiter = asyncio.Event()
            await self._waiter.wait()

    def set_ended(self) -> None:
        self.ended = True
        if self._waiter is not None:
            self._waiter.set()


class Deadline:
    """The attempts of one claim that share a timeout, and the one timer that
    stops those still in their handler when it runs out: a timer per claim and
    timeout rather than an `asyncio.timeout` per job (a timer handle in the
    loop's heap, armed and cancelled for every job, was a fifth of the worker's
    CPU in a drain of no-op jobs). An attempt leaves its deadline as its handler
    returns or raises; the timer is cancelled once none is left."""

    __slots__ = ("executions", "handle")

    def __init__(self) -> None:
        self.executions: set[Execution] = set()
        self.handle: asyncio.TimerHandle | None = None

    def leave(self, execution: Execution) -> None:
        executions = self.executions
        executions.discard(execution)
        if not executions and self.handle is not None:
            self.handle.cancel()
            self.handle = None


class UnknownTaskError(Exception):
    """No handler is registered on this worker for the job's task."""


def describe_error(exc: BaseException) -> str:
    """`Type: message (at file:line in function)`, short enough for the job row; a
    TaskError's message alone."""
    if isinstance(exc, TaskError):
        text = str(exc)
        frames = []
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        # The innermost frame of the handler's own code, not the worker's.
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    if frames:
        last = frames[-1]
        text += f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 3] + "..."


class Executor:
    """Starts attempts, tracks them while they run, and stops them on request."""

    def __init__(
        self,
        registry: Registry,
        resources: Resources,
        completer: Completer,
        meters: Meters,
        leases: Leases,
        *,
        concurrency: int,
        default_timeout: float,
    ) -> None:
        self._registry = registry
        self._resources = resources
        self._completer = completer
        self._meters = meters
        self._leases = leases
        self._default_timeout = default_timeout
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="sluice-task")
        #: The attempts running here, by (job id, attempt).
        self.running: dict[Key, Execution] = {}
        # The attempts of each job whose handler has not returned yet (a stopped
        # sync handler's thread may run on): a new attempt waits for them.
        self._alive: dict[int, list[Execution]] = {}
        #: (job id, attempt) of jobs stopped for a shutdown, to be handed back.
        self.handed_back: list[Key] = []
        #: Called whenever a job ends here (a slot is free).
        self.on_finished: Callable[[], None] = lambda: None

    def start(self, jobs: list[ClaimedJob]) -> int:
        """Run each claimed job; returns how many were started."""
        loop = asyncio.get_running_loop()
        resources = self._resources
        # Held until the outcome is written, and renewed meanwhile by the lease
        # keeper; while the event loop is blocked, only up to the job's timeout.
        now = time.monotonic()
        self._leases.hold(
            (j.key, now + (self._timeout(j) if j.problem is None else 0.0)) for j in jobs
        )
        # One timer per distinct timeout among these jobs (most claims have one).
        deadlines: dict[float, Deadline] = {}
        waits: list[tuple[str, float]] = []
        for job in jobs:
            if job.problem is not None:
                self._refuse(job)
                continue
            if job.key in self.running:
                # The very attempt this worker runs, handed to it again: the server
                # lost the claim in a crash (a claim does not wait for its flush
                # without synchronous replicas) and this worker claimed the job anew,
                # with the same attempt number. The lease is this worker's again,
                # and the execution already running is that attempt's.
                log.warning(
                    "job %s attempt %s was claimed again while it runs here (the "
                    "database lost the first claim in a crash): it carries on",
                    job.id,
                    job.attempt,
                )
                continue
            timeout = self._timeout(job)
            deadline = deadlines.get(timeout)
            if deadline is None:
                deadline = deadlines[timeout] = Deadline()
            execution = Execution(JobContext(resources, job), timeout, deadline)
            deadline.executions.add(execution)
            older = self._alive.get(job.id)
            if older is None:
                self._alive[job.id] = [execution]
                previous: list[Execution] = []
            else:
                log.warning(
                    "job %s attempt %s was claimed while attempt %s still runs here (this "
                    "worker stalled past its lease): the old attempt is stopped first",
                    job.id,
                    job.attempt,
                    ", ".join(str(e.job.attempt) for e in older),
                )
                for e in older:
                    self._stop(e, "lost")
                previous = list(older)
                older.append(execution)
            self.running[job.key] = execution
            execution.task = loop.create_task(
                self._run(execution, previous),
                name=f"job {job.id} attempt {job.attempt} ({job.task})",
            )
            waits.append((job.queue, max(0.0, (job.started_at - job.run_at).total_seconds())))
        began = loop.time()
        for timeout, deadline in deadlines.items():
            deadline.handle = loop.call_at(began + timeout, self._expire, deadline)
        if waits:
            self._meters.started(waits)
        return len(waits)

    def _expire(self, deadline: Deadline) -> None:
        """The timeout of these attempts ran out: stop those still in their handler."""
        deadline.handle = None
        executions, deadline.executions = deadline.executions, set()
        for execution in executions:
            execution.expired = True
            if execution.task is not None and execution.started:
                execution.task.cancel()

    def _timeout(self, job: ClaimedJob) -> float:
        return job.timeout.total_seconds() if job.timeout is not None else self._default_timeout

    def _refuse(self, job: ClaimedJob) -> None:
        """Fail, without retry, a claimed job whose row could not be decoded."""
        error = (
            f"this job cannot be run: its row holds a value the worker cannot read "
            f"({job.problem}); fix the row, then retry the job"
        )
        log.error("job %s attempt %s failed without running: %s", job.id, job.attempt, error)
        self._meters.task(job.queue, job.task).completed["failed"].inc()
        self._completer.record(Failed(job, error, False))

    def stop_jobs(self, ids: Iterable[int], reason: str) -> list[int]:
        """Stop every attempt of these jobs that runs here: `cancelled` (by a
        user) or `shutdown` (handed back); returns the ids stopped."""
        wanted = set(ids)
        return [
            e.job.id
            for e in list(self.running.values())
            if e.job.id in wanted and self._stop(e, reason)
        ]

    def stop_attempts(self, keys: Iterable[Key], reason: str) -> list[int]:
        """Stop these attempts if they run here (`lost`: the lease is no longer
        ours); returns the job ids stopped."""
        stopped = []
        for key in keys:
            execution = self.running.get(key)
            if execution is not None and self._stop(execution, reason):
                stopped.append(key[0])
        return stopped

    def stop_all(self, reason: str) -> None:
        for execution in list(self.running.values()):
            self._stop(execution, reason)

    def _stop(self, execution: Execution, reason: str) -> bool:
        if execution.stop_reason is not None or execution.ended:
            return False
        execution.stop_reason = reason
        execution.ctx._stop()
        if execution.task is not None and execution.started:
            execution.task.cancel()
        return True

    def tasks(self) -> list[asyncio.Task[None]]:
        return [e.task for e in self.running.values() if e.task is not None]

    def job_ids(self) -> set[int]:
        """The jobs with an attempt running here."""
        return {key[0] for key in self.running}

    async def _run(self, execution: Execution, previous: list[Execution]) -> None:
        execution.started = True
        job = execution.job
        job_id_var.set(job.id)
        attempt_var.set(job.attempt)
        if job.run_id is not None:
            run_id_var.set(job.run_id)
        began = time.perf_counter()
        label = "failed"
        written = False
        try:
            outcome = await self._attempt(execution, previous)
            label = _label(outcome)
            if type(outcome) is Succeeded or type(outcome) is Failed:
                self._completer.record(outcome)
                written = True
        finally:
            self._meters.ended(
                self._meters.task(job.queue, job.task), label, time.perf_counter() - began
            )
            del self.running[job.key]
            if execution.stop_reason == "shutdown":
                self.handed_back.append(job.key)
            elif not written:
                # Cancelled or lost (the database ended this attempt), or ended by
                # something no outcome says (the worker itself torn down): nothing
                # will be written, so the lease is left to expire or is already gone.
                self._leases.settle([job.key])
            self._when_returned(execution)
            self.on_finished()

    def _when_returned(self, execution: Execution) -> None:
        """Mark the execution ended once its handler has returned, in its thread too."""
        thread = execution.thread
        if thread is None or thread.done():
            self._ended(execution)
            return
        loop = asyncio.get_running_loop()

        def returned(_: Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._ended, execution)

        thread.add_done_callback(returned)

    def _ended(self, execution: Execution) -> None:
        execution.set_ended()
        alive = self._alive.get(execution.job.id)
        if alive is not None:
            alive.remove(execution)
            if not alive:
                del self._alive[execution.job.id]

    async def _attempt(self, execution: Execution, previous: list[Execution]) -> Outcome:
        """Run the handler; returns how the attempt ended."""
        job, ctx = execution.job, execution.ctx
        handler = self._registry.get(job.task)
        waiting = bool(previous)
        try:
            try:
                if execution.stop_reason is not None or execution.expired:
                    raise asyncio.CancelledError  # stopped before its task began
                if handler is None:
                    raise UnknownTaskError(f"no handler for task {job.task!r} on this worker")
                for older in previous:
                    await older.wait_ended()
                waiting = False
                if handler.is_async:
                    result = await handler.call(job.payload, ctx)
                else:
                    execution.thread = self._threads.submit(
                        contextvars.copy_context().run, handler.call, job.payload, ctx
                    )
                    result = await asyncio.wrap_future(execution.thread)
            finally:
                # The timeout covers the handler (and the wait for an older attempt),
                # not what follows.
                execution.deadline.leave(execution)
            try:
                encoded = None if result is None else json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise NonRetryableError(f"the handler's result is not JSON: {exc}") from None
        except asyncio.CancelledError:
            if execution.stop_reason is not None:
                # Cancelled or rescued: the database already ended this attempt.
                # Shutdown: the runner hands the job back. Either way there is
                # nothing to write.
                if execution.stop_reason == "shutdown":
                    return Released(job)
                return Cancelled(job, execution.stop_reason)
            # The timer's cancel is handled here; anyone else's (the worker torn
            # down) goes on up, as asyncio.timeout would let it.
            if not execution.expired or (execution.task and execution.task.uncancel()):
                raise
            return self._timed_out(execution, waiting)
        except TimeoutError as exc:
            # The handler's own, unless it turned the timer's cancel into one.
            if execution.expired:
                return self._timed_out(execution, waiting)
            return self._failed(execution, describe_error(exc), retryable=True)
        except NonRetryableError as exc:
            return self._failed(execution, describe_error(exc), retryable=False)
        except Exception as exc:
            return self._failed(execution, describe_error(exc), retryable=True)
        return Succeeded(job, encoded, ctx.output)

    def _timed_out(self, execution: Execution, waiting: bool) -> Failed:
        execution.ctx._stop()  # a sync handler's thread runs on: tell it to give up
        error = f"timed out after {execution.timeout:g}s"
        if waiting:
            error += " waiting for the job's previous attempt here to stop"
        return self._failed(execution, error, retryable=True, outcome="timeout")

    def _failed(
        self, execution: Execution, error: str, *, retryable: bool, outcome: str = "failed"
    ) -> Failed:
        job = execution.job
        last = job.attempt >= job.max_attempts or not retryable
        log.log(
            # Retries are routine (and in the attempt log); a job that gives up is not.
            logging.WARNING if last else logging.DEBUG,
            "job %s (%s) attempt %s/%s failed: %s",
            job.id,
            job.task,
            job.attempt,
            job.max_attempts,
            error,
        )
        return Failed(job, error, retryable, execution.ctx.output, outcome)

    def close(self) -> None:
        self._meters.publish()
        # Threads of sync handlers that ignore their cancel signal cannot be killed.
        self._threads.shutdown(wait=False, cancel_futures=True)


def _label(outcome: Outcome) -> str:
    """The outcome's label in sluice_jobs_completed_total."""
    if type(outcome) is Succeeded:
        return "succeeded"
    if type(outcome) is Failed:
        return outcome.outcome
    return "released" if type(outcome) is Released else "cancelled"
