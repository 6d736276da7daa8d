"""What a handler gets besides its payload: which job it runs, a way to report
progress, a cancellation signal, and the worker's shared resources."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from sluice.core.protocol import ClaimedJob
    from sluice.worker.resources import Resources
    from sluice.worker.settings import WorkerSettings


class NonRetryableError(Exception):
    """Raise from a handler to fail the job at once, whatever attempts it has left."""


class TaskError(Exception):
    """A failure whose message says all there is to say (the built-in tasks raise
    these: an exit status and stderr tail, an HTTP status and body excerpt): the
    job's error is the message alone, without the exception's type or source line."""


class JobContext:
    """The running job, as its handler sees it: a view of the claimed job (never a
    copy), plus what the worker lends it."""

    __slots__ = ("_cancelled", "_resources", "job", "output")

    def __init__(self, resources: Resources, job: ClaimedJob) -> None:
        self._resources = resources
        self._cancelled: threading.Event | None = None
        #: The claimed job itself (sluice.core.protocol.ClaimedJob).
        self.job = job
        #: Text kept in the attempt log (the shell task puts its output tails here).
        self.output: str | None = None

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.job.attempt

    @property
    def max_attempts(self) -> int:
        return self.job.max_attempts

    @property
    def queue(self) -> str:
        return self.job.queue

    @property
    def task(self) -> str:
        return self.job.task

    @property
    def tenant(self) -> str:
        return self.job.tenant

    @property
    def run_id(self) -> int | None:
        """The DAG run this job is a node of (None outside a run)."""
        return self.job.run_id

    @property
    def node(self) -> str | None:
        """The node's id in its DAG run (None outside a run)."""
        return self.job.node

    @property
    def parents(self) -> dict[str, Any]:
        """The results of this node's parents, by node id (empty outside a run),
        delivered with the claim."""
        return self.job.parents or {}

    @property
    def index(self) -> int | None:
        """A map element's place in its list (None for any other job)."""
        return self.job.map_index

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
        report: Callable[[ClaimedJob, Any], Awaitable[bool]] = self._resources.report_progress
        return await report(self.job, value)
