"""The worker's handles on the metrics of sluice.core.metrics, cached per label set:
`.labels()` costs a dict lookup under a lock, too much to pay per job.

sluice.core.metrics (prometheus_client, some 15 ms of imports) is loaded at the
first use, after the worker's first claim rather than on the way to it."""

from __future__ import annotations

import functools
from typing import Any

OUTCOMES = ("succeeded", "failed", "timeout", "cancelled", "released")


def _metrics() -> Any:
    from sluice.core import metrics

    return metrics


class TaskMeters:
    """The metric children of one (queue, task)."""

    __slots__ = ("completed", "dead_lettered", "retries", "run_seconds")

    def __init__(self, queue: str, task: str) -> None:
        m = _metrics()
        self.completed: dict[str, Any] = {
            outcome: m.JOBS_COMPLETED.labels(queue, task, outcome) for outcome in OUTCOMES
        }
        self.run_seconds = m.JOB_RUN_SECONDS.labels(queue, task)
        self.retries = m.JOB_RETRIES.labels(queue, task)
        self.dead_lettered = m.JOBS_DEAD_LETTERED.labels(queue, task)


class Meters:
    """Per-process cache of metric children."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], TaskMeters] = {}
        self._waits: dict[str, Any] = {}

    @functools.cached_property
    def running(self) -> Any:
        """The gauge of jobs running (looked up at first use)."""
        return _metrics().JOBS_RUNNING

    def task(self, queue: str, task: str) -> TaskMeters:
        meters = self._tasks.get((queue, task))
        if meters is None:
            meters = self._tasks[(queue, task)] = TaskMeters(queue, task)
        return meters

    def wait(self, queue: str) -> Any:
        child = self._waits.get(queue)
        if child is None:
            child = self._waits[queue] = _metrics().JOB_WAIT_SECONDS.labels(queue)
        return child


def count_rescued(retried: int, dead_lettered: int) -> None:
    """Count the jobs a rescue pass of the maintenance leader took back."""
    rescued = _metrics().JOBS_RESCUED
    rescued.labels("retried").inc(retried)
    rescued.labels("dead_lettered").inc(dead_lettered)
