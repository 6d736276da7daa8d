"""A worker in this process against the test database: running, failing,
retrying, timing out, cancelling, pausing, progress, wake-ups."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg

from tests.factories import fetch_job, insert_job, rows, scalar
from tests.worker.helpers import attempts, job_state, wait_for, wait_state


async def test_a_job_inserted_in_plain_sql_runs_and_keeps_its_result(db, start_worker):
    worker = await start_worker()
    job_id = await insert_job(db, "echo", payload={"x": 1})
    await wait_state(db, job_id, "succeeded")
    job = await fetch_job(db, job_id)
    assert job["result"]["payload"] == {"x": 1}
    assert job["result"]["worker"] == worker.id
    assert job["attempt"] == 1 and job["finished_at"] is not None
    assert [(a[0], a[1]) for a in await attempts(db, job_id)] == [(1, "succeeded")]


async def test_sync_handlers_run_in_the_thread_pool(db, start_worker):
    await start_worker()
    job_id = await insert_job(db, "sync_echo", payload=[1, 2])
    await wait_state(db, job_id, "succeeded")
    result = (await fetch_job(db, job_id))["result"]
    assert result["payload"] == [1, 2]
    assert result["thread"].startswith("sluice-task")


async def test_a_batch_insert_is_drained(db, start_worker):
    worker = await start_worker(concurrency=8, queues=("default", "other"))
    await db.execute(
        "INSERT INTO sluice.jobs (task, queue) "
        "SELECT 'noop', CASE WHEN g % 2 = 0 THEN 'default' ELSE 'other' END "
        "FROM generate_series(1, 500) g"
    )

    async def drained() -> bool:
        return await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE state = 'succeeded'") == 500

    await wait_for(drained, 20, "500 jobs to succeed")
    assert worker.claimer.claimed == 500
    assert await scalar(db, "SELECT count(*) FROM sluice.job_attempts") == 500


async def test_a_non_retryable_error_fails_the_job_at_once(db, start_worker):
    await start_worker()
    job_id = await insert_job(db, "not_retryable", max_attempts=5)
    await wait_state(db, job_id, "failed")
    job = await fetch_job(db, job_id)
    assert job["attempt"] == 1 and job["reason"] == "non_retryable"
    assert "bad input" in job["last_error"]


async def test_results_the_database_refuses_fail_only_their_own_job(db, start_worker):
    await start_worker(complete_batch=10, complete_interval=0.2)  # one batch for all
    await db.execute(
        "INSERT INTO sluice.jobs (task, payload, max_attempts) VALUES "
        "('echo', '{}', 1), ('odd_result', '{\"kind\": \"nul\"}', 1), "
        "('odd_result', '{\"kind\": \"nan\"}', 1), ('shout', '{}', 1), ('echo', '{}', 1)"
    )
    cur = await db.execute("SELECT id, task FROM sluice.jobs ORDER BY id")
    ids = [row[0] for row in await cur.fetchall()]
    for job_id in ids:
        await wait_state(db, job_id, "succeeded", "failed")
    states = [(await fetch_job(db, i))["state"] for i in ids]
    assert states == ["succeeded", "failed", "failed", "succeeded", "succeeded"]
    assert "the result could not be stored" in (await fetch_job(db, ids[1]))["last_error"]
    assert "not JSON" in (await fetch_job(db, ids[2]))["last_error"]
    assert (await attempts(db, ids[3]))[0][3] == "binary\\0output"


async def test_an_unknown_task_is_left_for_a_worker_that_has_its_handler(db, start_worker):
    """Issue 14: a worker claims only the tasks it has handlers for."""
    await start_worker()
    unknown = await insert_job(db, "no_such_task", max_attempts=1)
    known = await insert_job(db, "noop")
    await wait_state(db, known, "succeeded")
    assert (await fetch_job(db, unknown))["state"] == "ready"
    assert (
        await scalar(db, "SELECT unrunnable FROM sluice.queue_stats WHERE queue = 'default'") == 1
    )


async def test_a_hanging_handler_is_stopped_at_its_timeout(db, start_worker):
    worker = await start_worker()
    hung = await insert_job(db, "hang", max_attempts=1, timeout=dt.timedelta(seconds=0.3))
    sync_hung = await insert_job(db, "sync_hang", max_attempts=1, timeout=dt.timedelta(seconds=0.3))
    await wait_state(db, hung, "failed")
    await wait_state(db, sync_hung, "failed")
    for job_id in (hung, sync_hung):
        [(attempt, outcome, error, *_)] = await attempts(db, job_id)
        assert (attempt, outcome) == (1, "timeout")
        assert error == "timed out after 0.3s"
    assert not worker.executor.running


async def test_the_default_timeout_applies_when_the_job_has_none(db, start_worker):
    await start_worker(default_timeout=0.2)
    job_id = await insert_job(db, "hang", max_attempts=1)
    await wait_state(db, job_id, "failed")
    assert (await attempts(db, job_id))[0][1] == "timeout"


async def test_a_shell_job_keeps_its_output_in_the_attempt_log(db, start_worker):
    await start_worker(allow_shell=True)
    job_id = await insert_job(db, "shell", payload={"argv": ["sh", "-c", "echo out; echo err >&2"]})
    await wait_state(db, job_id, "succeeded")
    [(_, outcome, _, output, *_)] = await attempts(db, job_id)
    assert outcome == "succeeded"
    assert output == "--- stdout ---\nout\n\n--- stderr ---\nerr\n"
    assert (await fetch_job(db, job_id))["result"] == {"exit_code": 0}


async def test_cancelling_a_running_job_stops_it_by_notify(db, start_worker):
    worker = await start_worker(heartbeat_interval=30, lease_ttl=60)  # no heartbeat help
    job_id = await insert_job(db, "hang")
    await wait_state(db, job_id, "running")
    await wait_for(lambda: job_id in worker.executor.job_ids(), what="the job to start")
    assert await scalar(db, "SELECT sluice.cancel_job(%s)", job_id) is True
    # Well inside the heartbeat interval: the NOTIFY stops it, not a heartbeat.
    await wait_for(lambda: job_id not in worker.executor.job_ids(), 15, "the handler to stop")
    assert await job_state(db, job_id) == "cancelled"
    assert [(a[0], a[1]) for a in await attempts(db, job_id)] == [(1, "cancelled")]
    # The worker carries on.
    other = await insert_job(db, "noop")
    await wait_state(db, other, "succeeded")


async def test_progress_is_recorded_while_the_job_runs(db, start_worker):
    await start_worker()
    job_id = await insert_job(db, "with_progress", payload={"hold": 0.3})

    async def progress():
        return (await fetch_job(db, job_id))["progress"]

    assert await wait_for(progress, what="progress") == {"done": 1, "of": 2}
    await wait_state(db, job_id, "succeeded")
    assert (await fetch_job(db, job_id))["result"] is True


async def test_a_paused_queue_is_skipped_until_resumed(db, start_worker):
    worker = await start_worker(queues=("default", "other"), poll_interval=30)
    await db.execute("SELECT sluice.pause_queue('default')")
    held = await insert_job(db, "noop")
    # A job in another queue, inserted after, runs: the worker was awake and chose.
    sentinel = await insert_job(db, "noop", queue="other")
    await wait_state(db, sentinel, "succeeded")
    assert await job_state(db, held) == "ready"
    await db.execute("SELECT sluice.resume_queue('default')")
    # Well inside the poll interval: the resume wakes it, not a poll.
    await wait_state(db, held, "succeeded", within=15)
    assert worker.claimer.claimed == 2


async def test_a_paused_worker_stops_claiming_until_resumed_by_notify(db, start_worker):
    # Heartbeats (and polls) far apart: the pause and resume must arrive by NOTIFY,
    # so each wait for them ends well before the first heartbeat could bring them.
    worker = await start_worker(heartbeat_interval=30, lease_ttl=60, poll_interval=30)
    # Inserters notify a queue only while a worker waits on it: let this one get
    # there first, or the paused worker is (rightly) never told of the job.
    await wait_for(lambda: worker.claimer.armed, 30, "the worker to wait for jobs")
    assert await scalar(db, "SELECT sluice.worker_set_paused(%s, true)", worker.id) is True
    await wait_for(lambda: worker.claimer.paused, 15, "the worker to pause")
    # A claim already in flight (the start-up catch-up) may still finish; wait it out.
    await wait_for(lambda: not worker.claimer.claiming, 30, "the claim in flight")
    seen = worker.claimer.notified
    job_id = await insert_job(db, "noop")
    await wait_for(lambda: worker.claimer.notified > seen, 30, "the wake-up")
    await asyncio.sleep(0.1)  # give a (wrong) claim every chance to happen
    assert await job_state(db, job_id) == "ready"
    await db.execute("SELECT sluice.worker_set_paused(%s, false)", (worker.id,))
    await wait_state(db, job_id, "succeeded", within=15)  # inside the poll interval


async def test_a_wake_up_during_a_short_claim_keeps_the_worker_registered(db, start_worker):
    """Held open: a claim in flight (blocked on sluice.queues) while a wake-up and a
    pause come. The claim comes back short, so the worker is idle: it keeps its
    waiter row, and inserters still wake it while it is paused."""
    worker = await start_worker(heartbeat_interval=30, lease_ttl=60, poll_interval=30)
    await wait_for(lambda: worker.claimer.armed, 30, "the worker to wait for jobs")
    async with await psycopg.AsyncConnection.connect(db.info.dsn) as blocker:
        await blocker.execute("LOCK TABLE sluice.queues IN ACCESS EXCLUSIVE MODE")
        worker.claimer.catch_up()
        await wait_for(lambda: worker.claimer.claiming, 30, "the claim to start")
        assert await scalar(db, "SELECT sluice.worker_set_paused(%s, true)", worker.id) is True
        await wait_for(lambda: worker.claimer.paused, 15, "the worker to pause")
        worker.claimer.notify("default")  # heard while the claim waits
        await blocker.rollback()
    await wait_for(lambda: not worker.claimer.claiming, 30, "the claim to end")
    seen = worker.claimer.notified
    await insert_job(db, "noop")
    await wait_for(lambda: worker.claimer.notified > seen, 30, "the wake-up")
    assert worker.claimer.armed
    waiting = "SELECT count(*) FROM sluice.queue_waiters WHERE worker_id = %s"
    assert await scalar(db, waiting, worker.id) == 1


async def test_the_listener_reconnects_and_catches_up(db, start_worker):
    worker = await start_worker(poll_interval=60)  # no help from polling
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'sluice-listener' AND datname = current_database()"
    )
    job_id = await insert_job(db, "noop")  # may be sent while nobody listens
    await wait_state(db, job_id, "succeeded", within=30)
    await wait_for(lambda: worker.listener.connections >= 2, 30, "a reconnect")
    later = await insert_job(db, "noop")
    await wait_state(db, later, "succeeded", within=30)


async def test_scheduled_jobs_are_promoted_when_due(db, start_worker):
    await start_worker(maintenance=True)
    job_id = await scalar(
        db, "SELECT sluice.enqueue('noop', run_at => now() + interval '300 milliseconds')"
    )
    assert await job_state(db, job_id) == "scheduled"
    await wait_state(db, job_id, "succeeded", within=30)
    job = await fetch_job(db, job_id)
    assert job["started_at"] >= job["run_at"]


async def test_a_job_whose_lease_was_taken_is_stopped_locally(db, start_worker):
    worker = await start_worker()
    job_id = await insert_job(db, "hang", max_attempts=2, backoff_base=dt.timedelta(0))
    await wait_for(lambda: job_id in worker.executor.job_ids(), what="the job to start")
    # As if this worker had stalled past its lease: the rescuer takes the job back
    # (in one transaction, so the worker's own renewal cannot slip in between).
    async with db.transaction():
        await db.execute(
            "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (job_id,),
        )
        await db.execute("SELECT * FROM sluice.job_rescue_expired()")

    async def rerun() -> bool:
        job = await fetch_job(db, job_id)
        return job["attempt"] == 2 and job["state"] == "running"

    await wait_for(rerun, 10, "the rescued job to run again")
    rows = await attempts(db, job_id)
    assert rows[0][1] == "rescued"
    # Attempt 1's handler was stopped by the heartbeat; only attempt 2 runs here.
    assert list(worker.executor.running) == [(job_id, 2)]


async def test_stop_hands_unfinished_jobs_back(db, start_worker):
    worker = await start_worker(shutdown_grace=0.2)
    job_id = await insert_job(db, "hang", max_attempts=1)
    await wait_for(lambda: job_id in worker.executor.job_ids(), what="the job to start")
    worker.stop()
    await wait_state(db, job_id, "ready")
    job = await fetch_job(db, job_id)
    assert job["max_attempts"] == 2  # the handed-back attempt does not count
    assert (await attempts(db, job_id))[0][1] == "released"

    async def stopped() -> bool:  # marked right after the hand-back, in the same shutdown
        return await scalar(
            db, "SELECT stopped_at IS NOT NULL FROM sluice.workers WHERE id = %s", worker.id
        )

    await wait_for(stopped, 10, "the worker to be marked stopped")


async def test_a_second_stop_hands_jobs_back_without_waiting_for_the_grace(db, start_worker):
    worker = await start_worker(shutdown_grace=60)
    job_id = await insert_job(db, "hang")
    await wait_for(lambda: job_id in worker.executor.job_ids(), what="the job to start")
    worker.stop()
    await wait_for(lambda: worker._stopping, what="the shutdown to begin")
    assert await job_state(db, job_id) == "running"  # still given its grace
    worker.stop(hurry=True)
    await wait_state(db, job_id, "ready", within=30)
    assert (await attempts(db, job_id))[0][1] == "released"


async def test_an_attempt_claimed_again_after_a_lost_claim_runs_once(db, start_worker, tmp_path):
    """A crash can undo a claim (it does not wait for its flush without synchronous
    replicas) while its handler runs: the job is ready again with its old attempt
    number, and this very worker may claim the same (job, attempt) anew."""
    events, release = tmp_path / "events", tmp_path / "release"
    worker = await start_worker()
    # Its handler runs until the claim was made again, however long that takes.
    payload = {"file": str(events), "seconds": 60, "release": str(release)}
    job_id = await insert_job(db, "timed", payload=payload)
    await wait_for(lambda: job_id in worker.executor.job_ids(), 30, "the job to start")
    # The claim as the crash left it: undone.
    await db.execute(
        "UPDATE sluice.jobs SET state = 'ready', attempt = attempt - 1, worker_id = NULL, "
        "lease_expires_at = NULL, started_at = NULL WHERE id = %s",
        (job_id,),
    )
    await db.execute("NOTIFY sluice_jobs, 'default'")
    await wait_for(
        lambda: _claimed_again(db, job_id, worker.id), 30, "the worker to claim it again"
    )
    release.touch()
    await wait_state(db, job_id, "succeeded", within=30)
    assert [(a[0], a[1]) for a in await attempts(db, job_id)] == [(1, "succeeded")]
    assert events.read_text().count(" start ") == 1
    assert not worker.executor.running


async def _claimed_again(db, job_id: int, worker_id: str) -> bool:
    cur = await db.execute(
        "SELECT state::text, attempt, worker_id FROM sluice.jobs WHERE id = %s", (job_id,)
    )
    return await cur.fetchone() in (("running", 1, worker_id), ("succeeded", 1, worker_id))


async def test_a_worker_taking_every_queue_is_woken_by_a_queue_it_never_saw(db, start_worker):
    """SLUICE_QUEUES=*: asleep on LISTEN (no poll would come for a minute), it is
    woken by an insert into a queue nobody named, and counts as that queue's
    consumer (its handlers decide what is unrunnable)."""
    worker = await start_worker(queues=("*",), poll_interval=60)
    assert await scalar(db, "SELECT queues FROM sluice.workers WHERE id = %s", worker.id) == ["*"]
    await wait_for(lambda: worker.claimer.armed, 30, "the worker to wait for jobs")
    job_id = await insert_job(db, "noop", queue="never-seen")
    await wait_state(db, job_id, "succeeded", within=30)
    # Its waiter row was in before the insert, so the NOTIFY comes (perhaps after
    # the claim the barrier was followed by took the job).
    await wait_for(lambda: worker.claimer.notified >= 1, 30, "the wake-up")
    unknown = await insert_job(db, "no_such_task", queue="never-seen")
    stats = await rows(
        db,
        "SELECT consumers, no_consumer, unrunnable FROM sluice.queue_stats"
        " WHERE queue = 'never-seen'",
    )
    assert stats == [{"consumers": 1, "no_consumer": False, "unrunnable": 1}]
    assert await job_state(db, unknown) == "ready"


async def test_a_claim_whose_answer_was_lost_is_handed_back_at_once(db, start_worker):
    """A claim can commit and its answer be lost with the connection (a failover):
    its jobs are leased to a worker that never started them. After its next claim
    fails with the connection, the worker hands such jobs back at once instead of
    leaving them to wait out their lease (a minute here) for the rescuer."""
    worker = await start_worker(poll_interval=60, lease_ttl=60, heartbeat_interval=30)
    await wait_for(lambda: worker.claimer.armed, 30, "the worker to wait for jobs")
    # What such a claim leaves behind: a job leased to this worker, unknown to it.
    orphan = await insert_job(db, "noop", queue="elsewhere")
    await db.execute(
        "SELECT * FROM sluice.job_claim(%s, '{elsewhere}', 1, '60 seconds')", (worker.id,)
    )
    assert await job_state(db, orphan) == "running"
    # Every connection of the worker breaks: the claim the listener's reconnect
    # brings about fails with its connection.
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    await wait_state(db, orphan, "ready", within=30)
    cur = await db.execute(
        "SELECT attempt, outcome, error FROM sluice.job_attempts WHERE job_id = %s", (orphan,)
    )
    [(attempt, outcome, error)] = await cur.fetchall()
    assert (attempt, outcome) == (1, "released")
    assert "answer never reached the worker" in error
    # Jobs the worker does run are never handed back that way.
    job_id = await insert_job(db, "noop")
    await wait_state(db, job_id, "succeeded", within=30)
