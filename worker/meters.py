"""The worker's handles on the metrics of sluice.core.metrics, cached per label set:
`.labels()` costs a dict lookup under a lock, too much to pay per job.

What a job adds (its start, its end, how long it waited and ran) is tallied in
plain Python numbers and published to prometheus_client once per event-loop
iteration, as one `inc(n)` per counter and one pass per histogram: a claim of
a hundred jobs, or a hundred no-op jobs ending together, costs a few metric
updates (each taking a mutex) instead of four hundred. The publication is a
callback queued (`call_soon`) by the first job an iteration tallies, so a scrape
sees a job as soon as the loop has run what was queued behind it: a moment, not
a batch or a timer (and when the worker stops, `Executor.close` publishes what
is left).

sluice.core.metrics (prometheus_client, some 15 ms of imports) is loaded at the
first use, after the worker's first claim rather than on the way to it."""

from __future__ import annotations

import asyncio
import functools
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

OUTCOMES = ("succeeded", "failed", "timeout", "cancelled", "released")


def _metrics() -> Any:
    from sluice.core import metrics

    return metrics


def observe_many(histogram: Any, samples: Sequence[float]) -> None:
    """`histogram.observe(s)` for each of `samples`, as one update of each bucket
    touched and of the sum (prometheus_client has no batch observe). A histogram
    whose internals are not the ones this relies on is observed sample by sample."""
    try:
        bounds: Sequence[float] = histogram._upper_bounds
        buckets = histogram._buckets
        total = histogram._sum
    except AttributeError:
        for sample in samples:
            histogram.observe(sample)
        return
    counts = [0] * len(bounds)
    for sample in samples:
        # The first bucket whose upper bound is >= the sample, as observe() picks
        # (the last bound is +Inf).
        counts[bisect_left(bounds, sample)] += 1
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)
    total.inc(sum(samples))


class TaskMeters:
    """The metric children of one (queue, task), and what its attempts added
    since the last publication."""

    __slots__ = ("_ended", "_runs", "completed", "dead_lettered", "retries", "run_seconds")

    def __init__(self, queue: str, task: str) -> None:
        m = _metrics()
        self.completed: dict[str, Any] = {
            outcome: m.JOBS_COMPLETED.labels(queue, task, outcome) for outcome in OUTCOMES
        }
        self.run_seconds = m.JOB_RUN_SECONDS.labels(queue, task)
        self.retries = m.JOB_RETRIES.labels(queue, task)
        self.dead_lettered = m.JOBS_DEAD_LETTERED.labels(queue, task)
        self._ended = dict.fromkeys(OUTCOMES, 0)
        self._runs: list[float] = []

    def _publish(self) -> None:
        for outcome, n in self._ended.items():
            if n:
                self.completed[outcome].inc(n)
                self._ended[outcome] = 0
        runs, self._runs = self._runs, []
        observe_many(self.run_seconds, runs)


class Meters:
    """Per-process cache of metric children, and the tally of what jobs added
    since it was last published."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], TaskMeters] = {}
        self._waits: dict[str, Any] = {}
        # Not yet published: attempts ended (by their TaskMeters), waits by
        # queue, and the change in the number of jobs running.
        self._ended: list[TaskMeters] = []
        self._waited: dict[str, list[float]] = {}
        self._running = 0
        self._scheduled = False

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

    # -- tallied, published once per loop iteration ---------------------------

    def started(self, waits: Sequence[tuple[str, float]]) -> None:
        """Jobs started now, each (queue, seconds it waited)."""
        self._running += len(waits)
        for queue, seconds in waits:
            samples = self._waited.get(queue)
            if samples is None:
                samples = self._waited[queue] = []
            samples.append(seconds)
        self._schedule()

    def ended(self, meters: TaskMeters, outcome: str, seconds: float) -> None:
        """An attempt of `meters`' task ended with `outcome` after running `seconds`."""
        if not meters._runs:
            self._ended.append(meters)
        meters._runs.append(seconds)
        meters._ended[outcome] += 1
        self._running -= 1
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.publish)

    def publish(self) -> None:
        """Add what was tallied to the metrics (at the end of the loop iteration
        that tallied it, or when the worker stops)."""
        self._scheduled = False
        if self._running:
            self.running.inc(self._running)
            self._running = 0
        ended, self._ended = self._ended, []
        for meters in ended:
            meters._publish()
        if self._waited:
            waited, self._waited = self._waited, {}
            for queue, samples in waited.items():
                observe_many(self.wait(queue), samples)


def count_rescued(retried: int, dead_lettered: int) -> None:
    """Count the jobs a rescue pass of the maintenance leader took back."""
    rescued = _metrics().JOBS_RESCUED
    rescued.labels("retried").inc(retried)
    rescued.labels("dead_lettered").inc(dead_lettered)
