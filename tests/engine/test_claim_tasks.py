"""job_claim's p_tasks: a caller claims only the tasks it has handlers for, in the
usual order, and the jobs it cannot run stay ready for a worker that can; the
queue_stats view counts those no live consumer can run."""

from __future__ import annotations

import pytest

from tests.factories import insert_job, rows, scalar

CLAIM = "SELECT id, task::text FROM sluice.job_claim('w', %s, %s, '1 minute', p_tasks => %s)"


@pytest.mark.parametrize("queues", [["q"], ["q", "other"]], ids=["one queue", "general form"])
async def test_a_claim_takes_only_the_tasks_named(db, queues):
    ids = [await insert_job(db, task, queue="q") for task in ("a", "b", "a", "c", "b")]
    taken = await rows(db, CLAIM, queues, 10, ["b", "c"])
    assert [r["id"] for r in taken] == [ids[1], ids[3], ids[4]]
    assert {r["task"] for r in taken} == {"b", "c"}
    left = await rows(db, "SELECT id FROM sluice.jobs WHERE state = 'ready' ORDER BY id")
    assert [r["id"] for r in left] == [ids[0], ids[2]]
    # Without p_tasks, any task.
    assert len(await rows(db, CLAIM, queues, 10, None)) == 2


async def test_the_limit_counts_only_jobs_taken(db):
    for task in ("x", "x", "x", "y", "y"):
        await insert_job(db, task, queue="q")
    taken = await rows(db, CLAIM, ["q"], 2, ["y"])
    assert [r["task"] for r in taken] == ["y", "y"]


async def _register(db, worker, queues, tasks):
    await db.execute(
        "SELECT sluice.worker_register(%s, 'h', 1, %s, 4, '5 seconds', 'test', %s)",
        (worker, queues, tasks),
    )


async def test_queue_stats_counts_ready_jobs_no_live_consumer_can_run(db):
    for task in ("a", "b", "c", "c"):
        await insert_job(db, task, queue="q")
    stats = (
        "SELECT ready, consumers, no_consumer, unrunnable FROM sluice.queue_stats WHERE queue = 'q'"
    )
    # No consumer at all: no_consumer says it, unrunnable does not repeat it.
    assert await rows(db, stats) == [
        {"ready": 4, "consumers": 0, "no_consumer": True, "unrunnable": 0}
    ]
    await _register(db, "w1", ["q"], ["a", "x", "y"])
    await _register(db, "w2", ["q", "r"], ["b"])
    assert await rows(db, stats) == [
        {"ready": 4, "consumers": 2, "no_consumer": False, "unrunnable": 2}
    ]
    # A consumer that takes any task (a SQL client naming none) can run them all.
    await _register(db, "w3", ["q"], None)
    assert await scalar(db, "SELECT unrunnable FROM sluice.queue_stats WHERE queue = 'q'") == 0
    # A stopped worker is no consumer.
    await db.execute("SELECT sluice.worker_stop('w3')")
    assert await scalar(db, "SELECT unrunnable FROM sluice.queue_stats WHERE queue = 'q'") == 2


async def test_queue_stats_counts_a_worker_taking_every_queue_as_a_consumer_of_each(db):
    for queue, task in (("q", "a"), ("q", "b"), ("never-named", "b")):
        await insert_job(db, task, queue=queue)
    await db.execute("SELECT sluice.queue_set_concurrency('empty', 3)")  # a queue with no job
    stats = "SELECT queue, consumers, no_consumer, unrunnable FROM sluice.queue_stats ORDER BY 1"
    await _register(db, "named", ["q"], ["a"])
    assert await rows(db, stats) == [
        {"queue": "empty", "consumers": 0, "no_consumer": False, "unrunnable": 0},
        {"queue": "never-named", "consumers": 0, "no_consumer": True, "unrunnable": 0},
        {"queue": "q", "consumers": 1, "no_consumer": False, "unrunnable": 1},
    ]
    # Its tasks count as any consumer's do: b runs now in both queues.
    await _register(db, "every", ["*"], ["b"])
    assert await rows(db, stats) == [
        {"queue": "empty", "consumers": 1, "no_consumer": False, "unrunnable": 0},
        {"queue": "never-named", "consumers": 1, "no_consumer": False, "unrunnable": 0},
        {"queue": "q", "consumers": 2, "no_consumer": False, "unrunnable": 0},
    ]
    await db.execute("SELECT sluice.worker_set_paused('every', true)")
    assert (await rows(db, stats))[1]["no_consumer"] is True
