"""Runs claimed jobs: one asyncio task per job, bounded by its timeout, stoppable
by a cancel. The executor never writes SQL: outcomes go to the completer."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sluice.core.logging import attempt_var, job_id_var, run_id_var
from sluice.worker.completer import Completer
from sluice.worker.context import JobContext, NonRetryableError, TaskError
from sluice.worker.meters import Meters
from sluice.worker.registry import Registry
from sluice.worker.resources import Resources

log = logging.getLogger("sluice.worker")

# Longest error text kept per attempt.
ERROR_LIMIT = 2000


class Job:
    """A claimed job (a row of sluice.job_claim)."""

    __slots__ = (
        "attempt",
        "id",
        "max_attempts",
        "node",
        "payload",
        "queue",
        "run_at",
        "run_id",
        "started_at",
        "task",
        "tenant",
        "timeout",
    )

    def __init__(self, row: dict[str, Any]) -> None:
        self.id: int = row["id"]
        self.tenant: str = row["tenant"]
        self.queue: str = row["queue"]
        self.task: str = row["task"]
        self.payload: Any = row["payload"]
        self.attempt: int = row["attempt"]
        self.max_attempts: int = row["max_attempts"]
        self.timeout = row["timeout"]
        self.run_id: int | None = row["run_id"]
        self.node: str | None = row["node"]
        self.run_at = row["run_at"]
        self.started_at = row["started_at"]


class Execution:
    """A job being run here, and why it was stopped (None while it runs freely)."""

    __slots__ = ("ctx", "job", "stop_reason", "task")

    def __init__(self, job: Job, ctx: JobContext) -> None:
        self.job = job
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: str | None = None


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
    """Starts jobs, tracks them while they run, and stops them on request."""

    def __init__(
        self,
        registry: Registry,
        resources: Resources,
        completer: Completer,
        meters: Meters,
        *,
        concurrency: int,
        default_timeout: float,
    ) -> None:
        self._registry = registry
        self._resources = resources
        self._completer = completer
        self._meters = meters
        self._default_timeout = default_timeout
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="sluice-task")
        self.running: dict[int, Execution] = {}
        #: (job id, attempt) of jobs stopped for a shutdown, to be handed back.
        self.handed_back: list[tuple[int, int]] = []
        #: Called whenever a job ends here (a slot is free).
        self.on_finished: Callable[[], None] = lambda: None

    def start(self, rows: Iterable[dict[str, Any]]) -> int:
        """Run each claimed row as a job; returns how many were started."""
        loop = asyncio.get_running_loop()
        resources = self._resources
        started = 0
        for row in rows:
            job = Job(row)
            ctx = JobContext(
                resources,
                job.id,
                job.attempt,
                job.max_attempts,
                job.queue,
                job.task,
                job.tenant,
                job.run_id,
                job.node,
            )
            execution = Execution(job, ctx)
            self.running[job.id] = execution
            execution.task = loop.create_task(self._run(execution))
            started += 1
        if started:
            self._meters.running.inc(started)
        return started

    def stop(self, ids: Iterable[int], reason: str) -> list[int]:
        """Stop the jobs among `ids` that run here: `cancelled` (by a user),
        `lost` (the lease is no longer ours) or `shutdown` (handed back)."""
        stopped = []
        for job_id in ids:
            execution = self.running.get(job_id)
            if execution is None or execution.stop_reason is not None:
                continue
            execution.stop_reason = reason
            execution.ctx._stop()
            if execution.task is not None:
                execution.task.cancel()
            stopped.append(job_id)
        return stopped

    def tasks(self) -> list[asyncio.Task[None]]:
        return [e.task for e in self.running.values() if e.task is not None]

    async def _run(self, execution: Execution) -> None:
        job = execution.job
        job_id_var.set(job.id)
        attempt_var.set(job.attempt)
        if job.run_id is not None:
            run_id_var.set(job.run_id)
        meters = self._meters.task(job.queue, job.task)
        self._meters.wait(job.queue).observe(
            max(0.0, (job.started_at - job.run_at).total_seconds())
        )
        began = time.perf_counter()
        outcome = "failed"
        try:
            outcome = await self._attempt(execution)
        finally:
            meters.run_seconds.observe(time.perf_counter() - began)
            meters.completed[outcome].inc()
            del self.running[job.id]
            if execution.stop_reason == "shutdown":
                self.handed_back.append((job.id, job.attempt))
            self._meters.running.dec()
            self.on_finished()

    async def _attempt(self, execution: Execution) -> str:
        """Run the handler and hand its outcome to the completer; returns the outcome."""
        job, ctx = execution.job, execution.ctx
        handler = self._registry.get(job.task)
        timeout = job.timeout.total_seconds() if job.timeout is not None else self._default_timeout
        deadline = asyncio.timeout(timeout)
        try:
            if handler is None:
                raise UnknownTaskError(f"no handler for task {job.task!r} on this worker")
            async with deadline:
                if handler.is_async:
                    result = await handler.call(job.payload, ctx)
                else:
                    result = await asyncio.get_running_loop().run_in_executor(
                        self._threads,
                        contextvars.copy_context().run,
                        handler.call,
                        job.payload,
                        ctx,
                    )
            try:
                encoded = None if result is None else json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise NonRetryableError(f"the handler's result is not JSON: {exc}") from None
        except asyncio.CancelledError:
            if execution.stop_reason is None:
                raise
            # Cancelled or rescued: the database already ended this attempt. Shutdown:
            # the runner hands the job back. Either way there is nothing to write.
            return "released" if execution.stop_reason == "shutdown" else "cancelled"
        except TimeoutError as exc:
            if not deadline.expired():
                return self._failed(execution, describe_error(exc), retryable=True)
            ctx._stop()  # a sync handler's thread runs on: tell it to give up
            error = f"timed out after {timeout:g}s"
            return self._failed(execution, error, retryable=True, outcome="timeout")
        except NonRetryableError as exc:
            return self._failed(execution, describe_error(exc), retryable=False)
        except Exception as exc:
            return self._failed(execution, describe_error(exc), retryable=True)
        self._completer.succeed(job.id, job.attempt, encoded, ctx.output, job.queue, job.task)
        return "succeeded"

    def _failed(
        self, execution: Execution, error: str, *, retryable: bool, outcome: str = "failed"
    ) -> str:
        """Hand a failed attempt to the completer; returns its outcome."""
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
        self._completer.fail(
            job.id,
            job.attempt,
            error,
            retryable,
            outcome,
            execution.ctx.output,
            job.queue,
            job.task,
        )
        return outcome

    def close(self) -> None:
        # Threads of sync handlers that ignore their cancel signal cannot be killed.
        self._threads.shutdown(wait=False, cancel_futures=True)
