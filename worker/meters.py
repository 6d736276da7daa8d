"""The worker's handles on the metrics of sluice.core.metrics, cached per label set:
`.labels()` costs a dict lookup under a lock, too much to pay per job."""

from __future__ import annotations

from typing import Any

from sluice.core.metrics import (
    JOB_RETRIES,
    JOB_RUN_SECONDS,
    JOB_WAIT_SECONDS,
    JOBS_COMPLETED,
    JOBS_DEAD_LETTERED,
    JOBS_RESCUED,
    JOBS_RUNNING,
)

OUTCOMES = ("succeeded", "failed", "timeout", "cancelled", "released")


class TaskMeters:
    """The metric children of one (queue, task)."""

    __slots__ = ("completed", "dead_lettered", "retries", "run_seconds")

    def __init__(self, queue: str, task: str) -> None:
        self.completed: dict[str, Any] = {
            outcome: JOBS_COMPLETED.labels(queue, task, outcome) for outcome in OUTCOMES
        }
        self.run_seconds = JOB_RUN_SECONDS.labels(queue, task)
        self.retries = JOB_RETRIES.labels(queue, task)
        self.dead_lettered = JOBS_DEAD_LETTERED.labels(queue, task)


class Meters:
    """Per-process cache of metric children."""

    running = JOBS_RUNNING

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], TaskMeters] = {}
        self._waits: dict[str, Any] = {}

    def task(self, queue: str, task: str) -> TaskMeters:
        meters = self._tasks.get((queue, task))
        if meters is None:
            meters = self._tasks[(queue, task)] = TaskMeters(queue, task)
        return meters

    def wait(self, queue: str) -> Any:
        child = self._waits.get(queue)
        if child is None:
            child = self._waits[queue] = JOB_WAIT_SECONDS.labels(queue)
        return child


_RESCUED = {result: JOBS_RESCUED.labels(result) for result in ("retried", "dead_lettered")}


def count_rescued(retried: int, dead_lettered: int) -> None:
    """Count the jobs a rescue pass of the maintenance leader took back."""
    _RESCUED["retried"].inc(retried)
    _RESCUED["dead_lettered"].inc(dead_lettered)
