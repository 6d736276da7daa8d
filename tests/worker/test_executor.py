"""The executor on its own: timeouts driven by one timer per claim and timeout,
stops that arrive before a job's task has run, and the metrics a batch of jobs
adds. The executor writes no SQL (outcomes go to the completer), so these run
without a database: the completer here keeps what it is handed."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import threading
import weakref
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from sluice.core import metrics
from sluice.core.protocol import Failed, Outcome, Succeeded
from sluice.worker.completer import Completer
from sluice.worker.context import JobContext
from sluice.worker.executor import Executor
from sluice.worker.leases import Leases
from sluice.worker.meters import Meters, observe_many
from sluice.worker.registry import Registry
from sluice.worker.resources import Resources
from tests.worker.helpers import claimed, wait_for, worker_settings


class Kept(Completer):
    """A completer that keeps the outcomes it is handed instead of writing them."""

    def __init__(self, meters: Meters) -> None:
        super().__init__(None, "w", meters)  # type: ignore[arg-type]
        self.outcomes: dict[int, Outcome] = {}

    def record(self, outcome: Succeeded | Failed) -> None:
        self.outcomes[outcome.job.id] = outcome


async def _hang(payload: Any) -> None:
    await asyncio.sleep(3600)


async def _noop(payload: Any) -> None:
    return None


async def _upstream_timeout(payload: Any) -> None:
    raise TimeoutError("the upstream did not answer")


async def _always_fails(payload: Any) -> None:
    raise RuntimeError("no")


RELEASE = asyncio.Event()


async def _until_released(payload: Any) -> str:
    await RELEASE.wait()
    return "released"


def _sync_hang(payload: Any, ctx: JobContext) -> str:
    ctx.cancelled.wait(60)
    return "stopped"


STUCK = threading.Event()


def _stubborn(payload: Any, ctx: JobContext) -> str:
    # Ignores its cancel signal until the test lets it go.
    STUCK.wait(60)
    return "done"


@pytest.fixture
def executor() -> Executor:
    registry = Registry()
    for name, fn in {
        "hang": _hang,
        "noop": _noop,
        "upstream_timeout": _upstream_timeout,
        "always_fails": _always_fails,
        "until_released": _until_released,
        "sync_hang": _sync_hang,
        "stubborn": _stubborn,
    }.items():
        registry.register(name, fn)
    meters = Meters()
    executor = Executor(
        registry,
        Resources(worker_settings(), None),
        Kept(meters),
        meters,
        Leases(),
        concurrency=64,
        default_timeout=30.0,
    )
    yield executor
    executor.close()


def _job(id: int, task: str, timeout: float | None = None, **fields: Any):
    return claimed(
        id,
        task=task,
        timeout=None if timeout is None else dt.timedelta(seconds=timeout),
        max_attempts=1,
        **fields,
    )


async def _all_ended(executor: Executor) -> None:
    await wait_for(lambda: not executor.running, what="every job to end")


def _outcomes(executor: Executor) -> dict[int, Outcome]:
    return executor._completer.outcomes  # type: ignore[attr-defined]


async def test_each_job_of_one_claim_is_stopped_at_its_own_timeout(executor):
    RELEASE.clear()
    executor.start(
        [
            _job(1, "hang", 0.05),
            _job(2, "sync_hang", 0.05),
            _job(3, "noop", 0.05),
            # Same claim, longer timeout: still running when the others time out.
            _job(4, "until_released", 30),
        ]
    )
    outcomes = _outcomes(executor)
    await wait_for(lambda: {1, 2, 3} <= outcomes.keys(), what="the short jobs to end")
    assert 4 not in outcomes and (4, 1) in executor.running
    RELEASE.set()
    await _all_ended(executor)
    for job_id in (1, 2):
        failed = outcomes[job_id]
        assert type(failed) is Failed
        assert (failed.outcome, failed.error, failed.retryable) == (
            "timeout",
            "timed out after 0.05s",
            True,
        )
    assert type(outcomes[3]) is Succeeded
    assert type(outcomes[4]) is Succeeded and outcomes[4].result == '"released"'


async def test_a_timeout_error_of_the_handlers_own_is_a_plain_failure(executor):
    executor.start([_job(1, "upstream_timeout", 30)])
    await _all_ended(executor)
    failed = _outcomes(executor)[1]
    assert type(failed) is Failed
    assert failed.outcome == "failed"
    assert failed.error.startswith("TimeoutError: the upstream did not answer")


async def test_the_timeout_covers_the_wait_for_an_older_attempt(executor):
    STUCK.clear()
    try:
        executor.start([_job(1, "stubborn", 30, attempt=1)])
        await wait_for(lambda: executor.running[(1, 1)].thread is not None, what="the thread")
        # Claimed again (the worker stalled past its lease): attempt 1 is stopped,
        # but its thread runs on, and attempt 2 may not start before it ends.
        executor.start([_job(1, "stubborn", 0.05, attempt=2)])
        await _all_ended(executor)
        failed = _outcomes(executor)[1]
        assert type(failed) is Failed and failed.job.attempt == 2
        assert failed.outcome == "timeout"
        assert failed.error == (
            "timed out after 0.05s waiting for the job's previous attempt here to stop"
        )
    finally:
        STUCK.set()


async def test_a_cancel_from_elsewhere_is_not_taken_for_the_timeout(executor):
    """The timer and, in the same moment, someone else (the worker torn down) cancel
    a job's task: the attempt is not a timeout, the cancel goes on up."""
    executor.start([_job(1, "hang", 30)])
    execution = executor.running[(1, 1)]
    await wait_for(lambda: execution.started, what="the task to start")
    executor._expire(execution.deadline)
    execution.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await execution.task
    assert 1 not in _outcomes(executor)


async def test_a_job_stopped_before_its_task_ran_still_frees_its_slot(executor):
    """A cancel heard in the same loop iteration as the claim: the task is cancelled
    before its coroutine starts, which would skip its clean-up (the slot and the
    lease held for ever)."""
    executor.start([_job(1, "hang", 30), _job(2, "noop", 30)])
    assert executor.stop_jobs([1], "cancelled") == [1]
    await _all_ended(executor)
    assert (1, 1) not in executor._leases
    assert 1 not in _outcomes(executor)
    assert type(_outcomes(executor)[2]) is Succeeded


async def test_a_job_that_ended_is_not_kept_until_its_timeout(executor):
    """Its timer is cancelled with it: thousands of jobs a second, each kept for
    its whole timeout (30 minutes by default) with its payload, would fill memory."""
    executor.start([_job(1, "noop", 1800), _job(2, "always_fails", 1800)])
    kept = [weakref.ref(e.task) for e in executor.running.values()]
    await _all_ended(executor)
    gc.collect()
    assert [ref() for ref in kept] == [None, None]


def _sample(name: str, **labels: str) -> float:
    return metrics.WORKER_REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_scrape_after_a_batch_of_jobs_sees_every_one(executor):
    q = "executor-metrics"
    per_task = {"noop": 30, "always_fails": 10, "hang": 5}
    before = {
        **{t: _sample("sluice_job_run_seconds_count", queue=q, task=t) for t in per_task},
        "wait": _sample("sluice_job_wait_seconds_count", queue=q),
        "running": _sample("sluice_worker_jobs_running"),
    }
    jobs, ids = [], iter(range(1, 1000))
    for task, n in per_task.items():
        jobs += [_job(next(ids), task, 0.05 if task == "hang" else 30, queue=q) for _ in range(n)]
    cancelled = [_job(next(ids), "hang", 30, queue=q) for _ in range(5)]
    assert executor.start(jobs + cancelled) == 50
    await wait_for(
        lambda: _sample("sluice_job_wait_seconds_count", queue=q) == before["wait"] + 50,
        what="the jobs' waits",
    )
    await wait_for(lambda: len(executor.running) == 5, what="all but the cancelled jobs")
    executor.stop_jobs([j.id for j in cancelled], "cancelled")
    await _all_ended(executor)

    def published() -> bool:
        return _sample("sluice_worker_jobs_running") == before["running"]

    await wait_for(published, what="the ended jobs to be published")
    completed = {
        (t, o): _sample("sluice_jobs_completed_total", queue=q, task=t, outcome=o)
        for t in per_task
        for o in ("succeeded", "failed", "timeout", "cancelled")
    }
    assert {k: v for k, v in completed.items() if v} == {
        ("noop", "succeeded"): 30,
        ("always_fails", "failed"): 10,
        ("hang", "timeout"): 5,
        ("hang", "cancelled"): 5,
    }
    runs = {
        t: _sample("sluice_job_run_seconds_count", queue=q, task=t) - before[t] for t in per_task
    }
    assert runs == {"noop": 30, "always_fails": 10, "hang": 10}
    # Every observation is in a bucket (+Inf holds them all).
    for t in per_task:
        assert _sample("sluice_job_run_seconds_bucket", queue=q, task=t, le="+Inf") == _sample(
            "sluice_job_run_seconds_count", queue=q, task=t
        )


def test_observe_many_adds_what_observing_one_by_one_adds():
    one, many = CollectorRegistry(), CollectorRegistry()
    buckets = metrics.DURATION_BUCKETS
    a = Histogram("h", "h", ["k"], buckets=buckets, registry=one).labels("x")
    b = Histogram("h", "h", ["k"], buckets=buckets, registry=many).labels("x")
    # Bucket bounds themselves (le is inclusive), between them, zero, past the last.
    samples = [*buckets, *(x * 0.9 for x in buckets), 0.0, 0.0, 7200.0, 1e9]
    for s in samples:
        a.observe(s)
    observe_many(b, samples)
    observe_many(b, [])

    def exposed(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for m in registry.collect() for s in m.samples]

    x, y = exposed(one), exposed(many)
    assert [(name, labels) for name, labels, _ in x] == [(name, labels) for name, labels, _ in y]
    # Counts exactly; the sum up to the order of its additions.
    assert [v for *_, v in x] == pytest.approx([v for *_, v in y], rel=1e-12)
