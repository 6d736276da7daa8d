"""Waiting for a job's end: woken by the completion's notification (the hub never
polls), typed results, errors for failure, cancel, timeout; the race between
registering a waiter and the job ending, attacked and interleaved by hand; and
completions nobody waits for send no NOTIFY."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import psycopg
import pytest

import sluice
from tests.engine.notifications import drain
from tests.factories import claim, complete, fail, insert_job, rows, scalar
from tests.python_api.tasks import Box, Point, Summary, add, hold, measure
from tests.worker.helpers import wait_for


async def _conn(database_url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(database_url, autocommit=True)


async def test_result_is_the_typed_return_value(database_url, worker):
    await worker()
    at = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    async with await _conn(database_url) as conn:
        handle = await measure.enqueue(conn, box=Box(Point(0, 0), Point(2, 3), "a"), at=at)
        sum_ = await add.enqueue(conn, a=40, b=2)
    assert await handle.result(timeout=30) == Summary(area=6.0, label="a", at=at, job_id=handle.id)
    assert await sum_.result(timeout=30) == 42


async def test_sync_handles_wait_from_a_thread(database_url, worker):
    await worker()

    def work() -> list[int]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            handles = add.enqueue_many(conn, [{"a": i, "b": 1} for i in range(20)])
        return [h.result(timeout=30) for h in handles]

    assert await asyncio.to_thread(work) == list(range(1, 21))


async def test_failure_raises_with_the_last_error(database_url, worker):
    await worker()
    async with await _conn(database_url) as conn:
        handle = await sluice.enqueue(conn, "py.fail", {"reason": "no such customer"})
    with pytest.raises(sluice.JobFailed, match="no such customer") as raised:
        await handle.result(timeout=30)
    assert raised.value.state == "failed" and "no such customer" in raised.value.last_error


async def test_a_payload_from_sql_that_does_not_fit_fails_at_once_naming_the_field(
    database_url, db, worker
):
    await worker()
    job = await insert_job(db, "py.add", queue="math", payload={"a": "seven"}, max_attempts=5)
    handle = sluice.AsyncJobHandle(job, database_url)
    with pytest.raises(sluice.JobFailed) as raised:
        await handle.result(timeout=30)
    [row] = await rows(
        db, "SELECT state::text, attempt, last_error FROM sluice.jobs WHERE id = %s", job
    )
    assert row["state"] == "failed" and row["attempt"] == 1  # not retried
    assert row["last_error"] == (
        "the payload does not fit task 'py.add': payload.a: Expected `int`, got `str`"
    )
    assert raised.value.last_error == row["last_error"]
    missing = await insert_job(db, "py.add", queue="math", payload={"b": 1})
    with pytest.raises(sluice.JobFailed, match=r"payload\.a: is required"):
        await sluice.AsyncJobHandle(missing, database_url).result(timeout=30)


async def test_cancel_raises_job_cancelled(database_url, db):
    async with await _conn(database_url) as conn:
        handle = await add.configure(queue="nobody").enqueue(conn, a=1)
    waiting = asyncio.create_task(handle.result(timeout=30))
    await wait_for(lambda: scalar(db, "SELECT count(*) FROM sluice.job_waiters"), what="a waiter")
    await db.execute("SELECT sluice.cancel_job(%s)", (handle.id,))
    with pytest.raises(sluice.JobCancelled, match="cancelled"):
        await waiting


async def test_timeout_and_unknown_jobs(database_url):
    async with await _conn(database_url) as conn:
        handle = await add.configure(queue="nobody").enqueue(conn, a=1)
        began = time.monotonic()
        with pytest.raises(TimeoutError, match=r"has not ended after 0\.3s"):
            await handle.result(timeout=0.3)
        assert 0.3 <= time.monotonic() - began < 5
        with pytest.raises(LookupError, match="does not exist"):
            await sluice.AsyncJobHandle(10**12, database_url).result(timeout=1)
        # Enqueued but not committed: nobody else can see it yet.
        async with conn.transaction(force_rollback=True):
            unseen = await add.enqueue(conn, a=2)
            with pytest.raises(LookupError, match="commit the transaction"):
                await unseen.result(timeout=1)


async def test_result_wakes_within_milliseconds_of_the_commit(database_url, db):
    """No worker and no polling anywhere: the wait has 60 s to go when the job is
    completed by hand, and must return right after that commit."""
    latencies = []
    for _ in range(20):
        async with await _conn(database_url) as conn:
            handle = await add.configure(queue="manual").enqueue(conn, a=1)
        await claim(db, handle.id)
        waiting = asyncio.create_task(handle.result(timeout=60))
        await wait_for(
            lambda: scalar(db, "SELECT count(*) FROM sluice.job_waiters"), what="a waiter"
        )
        async with db.transaction():
            await complete(db, handle.id, result=7)
        committed = time.monotonic()
        assert await asyncio.wait_for(waiting, 10) == 7
        latencies.append(time.monotonic() - committed)
    latencies.sort()
    # Typically a millisecond or two; generous bounds for a loaded machine.
    assert latencies[len(latencies) // 2] < 0.1, latencies
    assert latencies[-1] < 2.0, latencies


@pytest.mark.slow
async def test_no_end_is_missed_when_it_races_the_registration(database_url, db):
    """The job ends while its waiter registers, released together, many times."""
    async with await _conn(database_url) as other:
        for i in range(200):
            async with await _conn(database_url) as conn:
                handle = await add.configure(queue="manual").enqueue(conn, a=i)
            await claim(db, handle.id)
            go = asyncio.Event()

            async def wait(h=handle, go=go) -> int:
                await go.wait()
                return await h.result(timeout=20)

            async def finish(job=handle.id, value=i, go=go) -> None:
                await go.wait()
                if value % 3 == 0:
                    await asyncio.sleep(0.001 * (value % 5))
                await complete(other, job, result=value)

            waiting = asyncio.gather(wait(), finish())
            go.set()
            result, _ = await asyncio.wait_for(waiting, 30)
            assert result == i
    assert await scalar(db, "SELECT count(*) FROM sluice.job_waiters") == 0


async def test_registration_waits_for_an_end_in_flight(database_url, db):
    """Interleaving by hand: the job's end is written but not committed when the
    waiter registers; job_await waits for that commit and answers the end."""
    await insert_job(db, "noop")  # ids start past 0
    job = await insert_job(db, "noop", queue="manual")
    await claim(db, job)
    async with await psycopg.AsyncConnection.connect(database_url) as ender:
        await complete(ender, job, result={"ok": True})  # transaction left open
        async with await _conn(database_url) as waiter:
            registering = asyncio.create_task(
                rows(waiter, "SELECT state::text, result FROM sluice.job_await(%s)", job)
            )
            await asyncio.sleep(0.3)
            assert not registering.done()  # FOR SHARE waits for the open end
            await ender.commit()
            assert await asyncio.wait_for(registering, 10) == [
                {"state": "succeeded", "result": {"ok": True}}
            ]
    # It had ended: no waiter was left behind.
    assert await scalar(db, "SELECT count(*) FROM sluice.job_waiters") == 0


async def test_an_end_waits_for_a_registration_in_flight_and_notifies_it(database_url, db):
    """Interleaving by hand, the other way: the registration holds its lock when
    the job ends; the end waits, then its trigger sees the waiter and notifies."""
    job = await insert_job(db, "noop", queue="manual")
    await claim(db, job)
    async with (
        await _conn(database_url) as listener,
        await psycopg.AsyncConnection.connect(database_url) as waiter,
        await psycopg.AsyncConnection.connect(database_url) as ender,
    ):
        await listener.execute("LISTEN sluice_job_done")
        assert await rows(waiter, "SELECT state::text FROM sluice.job_await(%s)", job) == [
            {"state": "running"}
        ]  # transaction left open, FOR SHARE held
        ending = asyncio.create_task(complete(ender, job))
        await asyncio.sleep(0.3)
        assert not ending.done()
        await waiter.commit()
        assert await asyncio.wait_for(ending, 10)
        await ender.commit()
        notes = [n async for n in listener.notifies(timeout=30, stop_after=1)]
    assert [n.payload for n in notes] == [str(job)]


async def test_only_waited_jobs_are_notified(database_url, db):
    quiet, waited = (
        (await insert_job(db, "noop", queue="manual") for _ in range(2))
        if False
        else (
            await insert_job(db, "noop", queue="manual"),
            await insert_job(db, "noop", queue="manual"),
        )
    )
    failing = await insert_job(db, "noop", queue="manual", max_attempts=1)
    for job in (quiet, waited, failing):
        await claim(db, job)
    async with await _conn(database_url) as listener:
        await listener.execute("LISTEN sluice_job_done")
        await complete(db, quiet)
        await db.execute("SELECT * FROM sluice.job_await(%s)", (waited,))
        await db.execute("SELECT * FROM sluice.job_await(%s)", (failing,))
        await complete(db, waited)
        await fail(db, failing, retryable=False)
        notes = await drain(listener, db, "sluice_job_done")
    assert notes == [str(waited), str(failing)]
    assert await scalar(db, "SELECT count(*) FROM sluice.job_waiters") == 0


async def test_registering_on_a_ready_job_wakes_its_queue(database_url, db):
    """A claimer may skip the row job_await locks for a moment: the queue is woken
    (when a worker waits on it: sluice.notify_ready)."""
    await db.execute("SELECT sluice.worker_register('w', 'h', 1, '{q1}', 1, '5 s', 'test')")
    await db.execute("SELECT sluice.worker_waiting('w', '{q1}')")
    job = await insert_job(db, "noop", queue="q1")
    async with await _conn(database_url) as listener:
        await listener.execute("LISTEN sluice_jobs")
        await db.execute("SELECT * FROM sluice.job_await(%s)", (job,))
        notes = await drain(listener, db, "sluice_jobs")
    assert notes == ["q1"]


async def test_runs_can_be_awaited(database_url, db, worker):
    await worker()
    await db.execute(
        """INSERT INTO sluice.dags (name, version, definition) VALUES ('pair', 1,
           '{"nodes": [{"id": "a", "task": "noop"},
                       {"id": "b", "task": "noop", "depends_on": ["a"]}]}')"""
    )
    async with await _conn(database_url) as conn:
        run = await sluice.start_run(conn, "pair")
    assert await run.result(timeout=30) == "succeeded"

    def sync() -> str:
        with psycopg.connect(database_url, autocommit=True) as conn:
            return sluice.start_run(conn, "pair").result(timeout=30)

    assert await asyncio.to_thread(sync) == "succeeded"


async def test_a_long_job_is_awaited_without_polling(database_url, worker):
    await worker()
    async with await _conn(database_url) as conn:
        handle = await hold.enqueue(conn, seconds=0.5)
    assert await handle.result(timeout=30) == "held"


def test_a_run_waiting_to_start_has_not_ended():
    """Only a run's ends end a wait: a run in any other state (`queued`, while its
    DAG's concurrency is used up) is waited for, not reported as ended."""
    from sluice.core.waiting import RunEnd, run_outcome

    assert not RunEnd(1, "queued").ended and not RunEnd(1, "running").ended
    with pytest.raises(TimeoutError):
        run_outcome(RunEnd(1, "queued"), 1, 0.5)
    assert run_outcome(RunEnd(1, "succeeded"), 1, 0.5) == "succeeded"
