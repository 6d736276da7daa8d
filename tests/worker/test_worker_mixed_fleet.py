"""Workers claim only the tasks they have handlers for (issue 14, item 4): in a
mixed fleet every job runs on a worker that has its handler, and a job no live
worker can run waits, counted in queue_stats, instead of failing into the DLQ."""

from __future__ import annotations

from tests.factories import rows, scalar
from tests.worker.helpers import TASKS_MODULE, wait_for

JOBS = 40


async def _worker_of(db, pid: int) -> str:
    async def registered() -> str | None:
        return await scalar(db, "SELECT id FROM sluice.workers WHERE pid = %s", pid)

    return await wait_for(registered, 30, f"worker {pid} to register")


async def test_a_mixed_fleet_runs_every_job_on_a_worker_with_its_handler(db, spawn_worker):
    a = spawn_worker(SLUICE_TASK_MODULES=TASKS_MODULE)
    b = spawn_worker(SLUICE_TASK_MODULES="tests.worker.fleet_tasks")
    worker_a, worker_b = await _worker_of(db, a.pid), await _worker_of(db, b.pid)
    # Interleaved in one queue, so each worker meets the other's jobs at the head.
    await db.execute(
        "INSERT INTO sluice.jobs (task, payload)"
        " SELECT CASE WHEN n %% 2 = 0 THEN 'echo' ELSE 'fleet.only_b' END, '{}'"
        "   FROM generate_series(1, %s) n",
        (JOBS,),
    )
    await db.execute("INSERT INTO sluice.jobs (task) VALUES ('fleet.nobody')")

    async def done() -> bool:
        return (
            await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE state = 'succeeded'") == JOBS
        )

    await wait_for(done, 60, "every job to succeed")
    ran = await rows(
        db,
        "SELECT j.task::text, array_agg(DISTINCT a.worker_id) AS workers, count(*) AS n"
        "  FROM sluice.job_attempts a JOIN sluice.jobs j ON j.id = a.job_id"
        " GROUP BY j.task ORDER BY j.task",
    )
    assert ran == [
        {"task": "echo", "workers": [worker_a], "n": JOBS // 2},
        {"task": "fleet.only_b", "workers": [worker_b], "n": JOBS // 2},
    ]
    assert await scalar(db, "SELECT count(*) FROM sluice.dead_letters") == 0
    # The job no worker has a handler for waits, and says so.
    assert await scalar(db, "SELECT state::text FROM sluice.jobs WHERE task = 'fleet.nobody'") == (
        "ready"
    )
    [stats] = await rows(
        db, "SELECT ready, unrunnable, no_consumer FROM sluice.queue_stats WHERE queue = 'default'"
    )
    assert stats == {"ready": 1, "unrunnable": 1, "no_consumer": False}
