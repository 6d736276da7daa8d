"""What a handler gets besides its payload: which job it runs, a way to report
progress, a cancellation signal, and the worker's shared resources."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from sluice.worker.resources import Resources
    from sluice.worker.settings import WorkerSettings


class NonRetryableError(Exception):
    """Raise from a handler to fail the job at once, whatever attempts it has left."""


class TaskError(Exception):
    """A failure whose message says all there is to say (the built-in tasks raise
    these: an exit status and stderr tail, an HTTP status and body excerpt): the
    job's error is the message alone, without the exception's type or source line."""


class JobContext:
    """The running job, as its handler sees it."""

    __slots__ = (
        "_cancelled",
        "_resources",
        "attempt",
        "job_id",
        "max_attempts",
        "node",
        "output",
        "queue",
        "run_id",
        "task",
        "tenant",
    )

    def __init__(
        self,
        resources: Resources,
        job_id: int,
        attempt: int,
        max_attempts: int,
        queue: str,
        task: str,
        tenant: str,
        run_id: int | None,
        node: str | None,
    ) -> None:
        self._resources = resources
        self._cancelled: threading.Event | None = None
        self.job_id = job_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.queue = queue
        self.task = task
        self.tenant = tenant
        self.run_id = run_id
        self.node = node
        #: Text kept in the attempt log (the shell task puts its output tails here).
        self.output: str | None = None

    @property
    def cancelled(self) -> threading.Event:
        """Set when the job must stop (cancelled, timed out, lease lost, worker
        stopping). Async handlers are cancelled anyway; sync ones should check it."""
        if self._cancelled is None:
            self._cancelled = threading.Event()
        return self._cancelled

    def _stop(self) -> None:
        self.cancelled.set()

    @property
    def settings(self) -> WorkerSettings:
        return self._resources.settings

    @property
    def worker_id(self) -> str:
        return self._resources.settings.id

    @property
    def http(self) -> httpx.AsyncClient:
        """The worker's shared HTTP client (connection pooling across jobs)."""
        return self._resources.http

    async def progress(self, value: Any) -> bool:
        """Record the job's progress (any JSON: a number, {"done": 3, "of": 10}...).
        False when the job is no longer this worker's (cancelled or rescued)."""
        report: Callable[[int, int, Any], Awaitable[bool]] = self._resources.report_progress
        return await report(self.job_id, self.attempt, value)
