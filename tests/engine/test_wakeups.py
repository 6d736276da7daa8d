"""NOTIFY only when a worker waits (perf-design.md D8): an insert notifies a queue
only while some worker has registered as waiting on it, and the barrier protocol
loses no wake-up: a worker about to sleep either is notified of a concurrent
insert, or its claim after the barrier sees that insert's jobs."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.engine.notifications import drain, listen, wait_on
from tests.factories import insert_job, rows, scalar

BARRIER = "SELECT sluice.worker_wait_barrier(%s)"
CLAIM = "SELECT id FROM sluice.job_claim('sleeper', %s, 10, '1 minute')"


async def test_no_waiter_no_notify(db, connect):
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await insert_job(db)
    assert await drain(listener, db, "sluice_jobs") == []


async def test_a_waiting_worker_is_notified_of_its_queues_only(db, connect):
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "default")
    await insert_job(db)
    await insert_job(db, queue="reports")
    assert await drain(listener, db, "sluice_jobs") == ["default"]
    # Busy again: no more notifications for it.
    await db.execute("SELECT sluice.worker_busy('sleeper')")
    await insert_job(db)
    assert await drain(listener, db, "sluice_jobs") == []


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
async def test_outside_read_committed_an_insert_always_notifies(db, connect, isolation):
    """Such a snapshot may predate a waiter row however late the probe runs."""
    listener = await connect()
    await listen(listener, "sluice_jobs")
    async with db.transaction():
        await db.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        await insert_job(db)
    assert await drain(listener, db, "sluice_jobs") == ["default"]


async def test_the_barrier_waits_for_an_inserter_that_missed_the_waiter(db, connect):
    """The interleaving the barrier exists for, held open deterministically."""
    inserter, listener = await connect(), await connect()
    await listen(listener, "sluice_jobs")
    await inserter.execute("BEGIN")
    job = await insert_job(inserter)  # probes: nobody waits, no NOTIFY
    await wait_on(db, "default")  # the worker registers after that probe
    assert await scalar(db, BARRIER, ["default"]) is False
    assert await rows(db, CLAIM, ["default"]) == []  # not committed yet
    await inserter.execute("COMMIT")
    assert await drain(listener, db, "sluice_jobs") == []  # it never notified...
    assert await scalar(db, BARRIER, ["default"]) is True
    assert await rows(db, CLAIM, ["default"]) == [{"id": job}]  # ...and is claimed


async def test_a_wildcard_waiter_is_notified_of_every_queue(db, connect):
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "*")
    await insert_job(db, queue="never-seen")
    await insert_job(db)
    await insert_job(db, queue="later", run_at="2999-01-01")  # not ready: no wake-up
    assert await drain(listener, db, "sluice_jobs") == ["never-seen", "default"]


async def test_the_wildcard_barrier_waits_for_an_inserter_into_any_queue(db, connect):
    """The interleaving held open for a worker taking every queue: the inserter's
    queue is one the worker never named."""
    inserter, listener = await connect(), await connect()
    await listen(listener, "sluice_jobs")
    await inserter.execute("BEGIN")
    job = await insert_job(inserter, queue="brand-new")  # nobody waits: no NOTIFY
    await wait_on(db, "*")
    assert await scalar(db, BARRIER, ["*"]) is False
    assert await rows(db, CLAIM, ["*"]) == []
    await inserter.execute("COMMIT")
    assert await drain(listener, db, "sluice_jobs") == []
    assert await scalar(db, BARRIER, ["*"]) is True
    assert await rows(db, CLAIM, ["*"]) == [{"id": job}]


async def test_the_barrier_ignores_other_queues(db, connect):
    inserter = await connect()
    await inserter.execute("BEGIN")
    await insert_job(inserter, queue="reports")
    await wait_on(db, "default")
    assert await scalar(db, BARRIER, ["default"]) is True
    await inserter.execute("ROLLBACK")


async def test_released_dag_children_notify_a_waiting_worker(db, connect):
    listener = await connect()
    await listen(listener, "sluice_jobs")
    parent = await insert_job(db, queue="p")
    child = await insert_job(db, queue="c")
    await db.execute(
        "INSERT INTO sluice.job_edges (parent_id, child_id) VALUES (%s, %s)", (parent, child)
    )
    await wait_on(db, "c")
    await db.execute("SELECT id FROM sluice.job_claim('w', '{p}', 1, '1 minute')")
    await db.execute(
        "SELECT sluice.job_complete_many('w', %s, %s, ARRAY[NULL]::jsonb[], ARRAY[NULL]::text[])",
        ([parent], [1]),
    )
    assert await drain(listener, db, "sluice_jobs") == ["c"]


ROUNDS = 200


@pytest.mark.slow
@pytest.mark.parametrize("wildcard", [False, True], ids=["named", "wildcard"])
async def test_no_wake_up_is_lost_when_a_worker_goes_to_sleep_during_an_insert(
    db, connect, wildcard
):
    """Barrier-released rounds: an inserter commits a job while the worker runs the
    protocol (register, barrier, claim). Every round the job is either notified
    to the worker or claimed by its last claim. The wildcard worker waits on '*'
    and each round inserts into a queue it has never seen."""
    inserter, listener = await connect(), await connect()
    await listen(listener, "sluice_jobs")
    await db.execute(
        "SELECT sluice.worker_register('sleeper', 'h', 1, %s, 1, '5 seconds', 'test')",
        (["*"] if wildcard else ["race"],),
    )
    lost = []
    rng = random.Random(3)
    for n in range(ROUNDS // 2 if wildcard else ROUNDS):
        go, queue = asyncio.Event(), f"race-{n}"
        waits_on = "*" if wildcard else queue

        async def insert(go: asyncio.Event = go, queue: str = queue) -> int:
            await go.wait()
            async with inserter.transaction():
                job = await insert_job(inserter, queue=queue)
                # The window the barrier covers: probed for waiters, not committed.
                await asyncio.sleep(rng.uniform(0, 0.003))
            return job

        async def sleep(go: asyncio.Event = go, waits_on: str = waits_on) -> list:
            await go.wait()
            await asyncio.sleep(rng.uniform(0, 0.003))
            await db.execute("SELECT sluice.worker_waiting('sleeper', %s)", ([waits_on],))
            delay = 0.001
            while not await scalar(db, BARRIER, [waits_on]):
                await asyncio.sleep(delay)
                delay = min(2 * delay, 0.05)
            return await rows(db, CLAIM, [waits_on])

        tasks = [asyncio.create_task(insert()), asyncio.create_task(sleep())]
        await asyncio.sleep(0)
        go.set()
        job, claimed = await asyncio.gather(*tasks)
        notified = await drain(listener, inserter, "sluice_jobs")
        if {"id": job} not in claimed and queue not in notified:
            lost.append(n)
        await db.execute("SELECT sluice.worker_busy('sleeper')")
        # A job notified but not claimed must not be claimed by the next round.
        await db.execute(
            "UPDATE sluice.jobs SET state = 'cancelled', archived_at = now() WHERE state = 'ready'"
        )
    assert lost == []
