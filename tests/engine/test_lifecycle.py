"""A job's life after the claim: completion, failure and retry with backoff, the
dead-letter queue, leases (heartbeat, rescue, zombie completions), graceful
release, promotion of scheduled jobs, and pruning."""

from datetime import timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.engine.notifications import drain, listen, wait_on
from tests.factories import (
    WORKER,
    claim,
    complete,
    fail,
    fetch_job,
    insert_job,
    make_job,
    rows,
)


async def attempts(conn, job_id):
    return await rows(
        conn, "SELECT * FROM sluice.job_attempts WHERE job_id = %s ORDER BY attempt", job_id
    )


# -- completion ---------------------------------------------------------------


async def test_complete_stores_result_and_logs_the_attempt(db):
    job_id = await make_job(db, "running")
    assert await complete(db, job_id, result={"rows": 3})
    job = await fetch_job(db, job_id)
    assert job["state"] == "succeeded"
    assert job["result"] == {"rows": 3}
    assert job["finished_at"] is not None
    assert job["lease_expires_at"] is None
    [attempt] = await attempts(db, job_id)
    assert attempt["attempt"] == 1
    assert attempt["outcome"] == "succeeded"
    assert attempt["worker_id"] == WORKER
    assert attempt["started_at"] == job["started_at"]


async def test_complete_many_is_one_batch(db):
    ids = [await make_job(db, "running") for _ in range(5)]
    done = await rows(
        db,
        "SELECT * FROM sluice.job_complete_many(%s, %s, %s, %s::jsonb[], %s::text[]) AS id",
        WORKER,
        ids,
        [1] * 5,
        [Jsonb(i) for i in range(5)],
        ["out"] * 5,
    )
    assert sorted(r["id"] for r in done) == sorted(ids)
    results = await rows(db, "SELECT id, result FROM sluice.jobs ORDER BY id")
    assert [r["result"] for r in results] == list(range(5))


@pytest.mark.parametrize(
    ("worker", "attempt_delta"),
    [("someone-else", 0), (WORKER, 1), (WORKER, -1)],
    ids=["other worker", "future attempt", "past attempt"],
)
async def test_completion_outside_the_lease_changes_nothing(db, worker, attempt_delta):
    job_id = await make_job(db, "running")
    done = await rows(
        db,
        "SELECT * FROM sluice.job_complete_many(%s, %s, %s, %s::jsonb[])",
        worker,
        [job_id],
        [1 + attempt_delta],
        [Jsonb("late")],
    )
    assert done == []
    job = await fetch_job(db, job_id)
    assert job["state"] == "running"
    assert job["result"] is None
    assert await attempts(db, job_id) == []


async def test_a_second_completion_is_a_no_op(db):
    job_id = await make_job(db, "running")
    assert await complete(db, job_id, result=1)
    assert not await complete(db, job_id, result=2)
    assert (await fetch_job(db, job_id))["result"] == 1
    assert len(await attempts(db, job_id)) == 1


# -- the attempt history -------------------------------------------------------
# sluice.job_attempts is a view: failed, rescued, released and cancelled
# attempts and successes with output are rows of job_attempt_log; a success
# without output is read from its job row.


async def log_rows(conn, job_id):
    return await rows(
        conn, "SELECT * FROM sluice.job_attempt_log WHERE job_id = %s ORDER BY attempt", job_id
    )


async def test_a_success_without_output_is_read_from_the_job_row(db):
    job_id = await make_job(db, "succeeded")
    assert await log_rows(db, job_id) == []
    job = await fetch_job(db, job_id)
    [attempt] = await attempts(db, job_id)
    assert attempt == {
        "job_id": job_id,
        "attempt": 1,
        "worker_id": WORKER,
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
        "outcome": "succeeded",
        "error": None,
        "output": None,
    }


async def test_a_success_with_output_is_logged_once(db):
    job_id = await make_job(db, "running")
    await db.execute(
        "SELECT sluice.job_complete_many(%s, %s, %s, %s::jsonb[], %s::text[])",
        (WORKER, [job_id], [1], [Jsonb(None)], ["the tail"]),
    )
    [logged] = await log_rows(db, job_id)
    assert (logged["outcome"], logged["output"]) == ("succeeded", "the tail")
    [attempt] = await attempts(db, job_id)
    assert attempt == logged


async def test_two_failures_then_a_success_read_three_attempts(db):
    job_id = await insert_job(db, max_attempts=3, backoff_base="0 seconds")
    for _ in range(2):
        await claim(db, job_id)
        await fail(db, job_id, error="flaky")
    await claim(db, job_id)
    assert await complete(db, job_id)
    history = await attempts(db, job_id)
    assert [(a["attempt"], a["outcome"], a["error"]) for a in history] == [
        (1, "failed", "flaky"),
        (2, "failed", "flaky"),
        (3, "succeeded", None),
    ]
    assert [a["attempt"] for a in await log_rows(db, job_id)] == [1, 2]


async def test_keeping_a_succeeded_jobs_attempt_writes_it_to_the_log(db):
    """What a revival of a succeeded job does before it resets the row."""
    job_id = await make_job(db, "succeeded")
    before = await attempts(db, job_id)
    await db.execute("SELECT sluice.job_attempts_keep(%s)", ([job_id],))
    await db.execute("SELECT sluice.job_attempts_keep(%s)", ([job_id],))  # idempotent
    assert await log_rows(db, job_id) == before
    assert await attempts(db, job_id) == before


# -- failure, backoff, DLQ --------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "attempt", "jitter", "seconds"),
    [
        ("exponential", 1, 0.5, 2),
        ("exponential", 2, 0.5, 4),
        ("exponential", 4, 0.5, 16),
        ("exponential", 3, 0.0, 6.4),
        ("exponential", 3, 1.0, 9.6),
        ("exponential", 40, 0.5, 60),  # capped
        ("exponential", 10_000, 0.9, 60),  # no overflow
        ("linear", 3, 0.5, 6),
        ("constant", 9, 0.5, 2),
    ],
)
async def test_backoff_delay(db, kind, attempt, jitter, seconds):
    cur = await db.execute(
        "SELECT sluice.backoff_delay(%s, '2 seconds', '1 minute', %s, %s)", (kind, attempt, jitter)
    )
    assert (await cur.fetchone())[0].total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("attempt", [1, 3, 40])
async def test_a_null_retry_policy_is_the_default_one(db, attempt):
    """A row stores null for the default policy (13_jobs.sql): the delay is the same."""
    cur = await db.execute(
        "SELECT sluice.backoff_delay(NULL, NULL, NULL, %s, 0.5),"
        " sluice.backoff_delay('exponential', '1 second', '1 hour', %s, 0.5)",
        (attempt, attempt),
    )
    by_null, by_value = await cur.fetchone()
    assert by_null == by_value


async def test_a_job_with_the_default_policy_retries_after_it(db):
    job_id = await make_job(db, "running", max_attempts=3)
    await fail(db, job_id, error="flaky")
    # From the failure's own time (its attempt's end), not from the claim's, which
    # a loaded machine may put any time before it.
    [attempt] = await attempts(db, job_id)
    delay = (await fetch_job(db, job_id))["run_at"] - attempt["finished_at"]
    assert timedelta(seconds=0.8) <= delay <= timedelta(seconds=1.2)  # 1 s ± 20 %


async def test_failure_with_attempts_left_is_scheduled_after_its_backoff(db):
    job_id = await make_job(db, "running", max_attempts=3, backoff_base="10 seconds")
    outcome = await fail(db, job_id, error="flaky")
    job = await fetch_job(db, job_id)
    assert outcome["state"] == job["state"] == "scheduled"
    assert job["last_error"] == "flaky"
    assert job["finished_at"] is None
    [attempt] = await attempts(db, job_id)
    delay = job["run_at"] - attempt["finished_at"]  # from the failure's own time
    assert timedelta(seconds=8) <= delay <= timedelta(seconds=12)  # 10 s ± 20 %
    assert (attempt["outcome"], attempt["error"]) == ("failed", "flaky")


async def test_failure_without_backoff_is_ready_at_once(db):
    job_id = await make_job(db, "running", backoff_base="0 seconds")
    await fail(db, job_id)
    assert (await fetch_job(db, job_id))["state"] == "ready"


async def test_exhausted_attempts_fail_into_the_dlq_with_the_error_history(db):
    job_id = await insert_job(db, max_attempts=3, backoff_base="0 seconds")
    for n in range(1, 4):
        await claim(db, job_id)
        await fail(db, job_id, error=f"error {n}")
    job = await fetch_job(db, job_id)
    assert job["state"] == "failed"
    assert job["reason"] == "attempts_exhausted"
    assert job["attempt"] == 3
    [dead] = await rows(db, "SELECT * FROM sluice.dead_letter_queue")
    assert dead["job_id"] == job_id
    assert dead["attempts"] == 3
    assert dead["last_error"] == "error 3"
    assert [e["error"] for e in dead["errors"]] == ["error 1", "error 2", "error 3"]
    assert [a["outcome"] for a in await attempts(db, job_id)] == ["failed"] * 3


async def test_non_retryable_error_fails_at_once(db):
    job_id = await make_job(db, "running", max_attempts=10)
    outcome = await fail(db, job_id, error="bad input", retryable=False)
    assert outcome["state"] == "failed"
    job = await fetch_job(db, job_id)
    assert (job["reason"], job["attempt"]) == ("non_retryable", 1)
    assert len(await rows(db, "SELECT * FROM sluice.dead_letters WHERE job_id = %s", job_id)) == 1


async def test_timeout_is_a_failed_attempt_with_its_own_outcome(db):
    job_id = await make_job(db, "running")
    await db.execute(
        "SELECT sluice.job_fail_many(%s, %s, %s, %s, %s, %s)",
        (WORKER, [job_id], [1], ["timed out after 5s"], [True], ["timeout"]),
    )
    [attempt] = await attempts(db, job_id)
    assert attempt["outcome"] == "timeout"


async def test_retry_from_the_dlq_gives_fresh_attempts(db):
    job_id = await insert_job(db, max_attempts=2, backoff_base="0 seconds")
    for _ in range(2):
        await claim(db, job_id)
        await fail(db, job_id)
    cur = await db.execute("SELECT sluice.retry_dead(%s)", (job_id,))
    assert (await cur.fetchone())[0] is True
    job = await fetch_job(db, job_id)
    assert (job["state"], job["attempt"], job["max_attempts"]) == ("ready", 2, 4)
    assert await rows(db, "SELECT * FROM sluice.dead_letter_queue") == []
    [entry] = await rows(db, "SELECT * FROM sluice.dead_letters")
    assert entry["resolution"] == "retried"
    # Two fresh attempts, then back in the DLQ; a second retry gives two more.
    for _ in range(2):
        await claim(db, job_id)
        await fail(db, job_id)
    assert (await fetch_job(db, job_id))["state"] == "failed"
    await db.execute("SELECT sluice.retry_dead(%s)", (job_id,))
    assert (await fetch_job(db, job_id))["max_attempts"] == 6


async def test_retry_dead_of_a_job_not_in_the_dlq_is_false(db):
    job_id = await make_job(db, "succeeded")
    cur = await db.execute("SELECT sluice.retry_dead(%s)", (job_id,))
    assert (await cur.fetchone())[0] is False
    assert (await fetch_job(db, job_id))["state"] == "succeeded"


async def test_discard_resolves_the_dlq_entry_and_keeps_the_job_failed(db):
    job_id = await make_job(db, "failed")
    cur = await db.execute("SELECT sluice.dead_letter_discard(%s)", (job_id,))
    assert (await cur.fetchone())[0] is True
    assert await rows(db, "SELECT * FROM sluice.dead_letter_queue") == []
    assert (await fetch_job(db, job_id))["state"] == "failed"


# -- leases ---------------------------------------------------------------------


async def test_heartbeat_renews_only_the_callers_running_jobs(db):
    mine = await make_job(db, "running")
    theirs = await insert_job(db)
    await claim(db, theirs, worker="other")
    cancelled = await make_job(db, "running")
    await db.execute("SELECT sluice.cancel_job(%s)", (cancelled,))
    await db.execute("UPDATE sluice.jobs SET lease_expires_at = now() WHERE state = 'running'")
    renewed = await rows(
        db,
        "SELECT * FROM sluice.job_heartbeat(%s, %s, %s, '1 minute')",
        WORKER,
        [mine, theirs, cancelled],
        [1, 1, 1],
    )
    assert [r["id"] for r in renewed] == [mine]
    assert (await fetch_job(db, mine))["lease_expires_at"] > (await fetch_job(db, theirs))[
        "lease_expires_at"
    ]


async def test_expired_leases_are_rescued_as_failed_attempts(db):
    retried = await make_job(db, "running", max_attempts=3, backoff_base="0 seconds")
    exhausted = await make_job(db, "running", max_attempts=1)
    alive = await make_job(db, "running")
    await db.execute(
        "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second' WHERE id <> %s",
        (alive,),
    )
    rescued = await rows(db, "SELECT * FROM sluice.job_rescue_expired(100)")
    assert {r["id"]: r["state"] for r in rescued} == {retried: "ready", exhausted: "failed"}
    assert (await fetch_job(db, alive))["state"] == "running"
    [attempt] = await attempts(db, retried)
    assert attempt["outcome"] == "rescued"
    assert WORKER in attempt["error"]
    [dead] = await rows(db, "SELECT * FROM sluice.dead_letter_queue")
    assert dead["job_id"] == exhausted


async def test_a_zombie_completion_after_rescue_is_ignored(db):
    job_id = await make_job(db, "running", backoff_base="0 seconds")
    await db.execute("UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 s'")
    await db.execute("SELECT sluice.job_rescue_expired(10)")
    await claim(db, job_id, worker="second")
    # The first worker wakes up and reports success for attempt 1: ignored.
    assert not await complete(db, job_id, worker=WORKER)
    job = await fetch_job(db, job_id)
    assert (job["state"], job["worker_id"], job["attempt"]) == ("running", "second", 2)
    assert await complete(db, job_id, worker="second")


async def test_release_hands_jobs_back_without_spending_the_attempt(db):
    job_id = await make_job(db, "running", max_attempts=1)
    released = await rows(
        db, "SELECT * FROM sluice.job_release_many(%s, %s, %s) AS id", WORKER, [job_id], [1]
    )
    assert [r["id"] for r in released] == [job_id]
    job = await fetch_job(db, job_id)
    assert (job["state"], job["attempt"], job["max_attempts"]) == ("ready", 1, 2)
    [attempt] = await attempts(db, job_id)
    assert attempt["outcome"] == "released"
    await claim(db, job_id)
    assert await complete(db, job_id)


async def test_progress_is_recorded_only_under_the_lease(db):
    job_id = await make_job(db, "running")
    cur = await db.execute(
        "SELECT sluice.job_progress(%s, %s, 1, %s)", (WORKER, job_id, Jsonb({"done": 50}))
    )
    assert (await cur.fetchone())[0] is True
    cur = await db.execute(
        "SELECT sluice.job_progress('other', %s, 1, %s)", (job_id, Jsonb({"done": 99}))
    )
    assert (await cur.fetchone())[0] is False
    assert (await fetch_job(db, job_id))["progress"] == {"done": 50}


# -- scheduled jobs -----------------------------------------------------------------


async def test_promotion_makes_due_jobs_ready_and_wakes_their_queue(db, connect):
    due = await insert_job(db, run_at="2999-01-01", queue="later")
    not_due = await insert_job(db, run_at="2999-01-01")
    await db.execute("UPDATE sluice.jobs SET run_at = now() - interval '1 s' WHERE id = %s", (due,))
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "later")
    cur = await db.execute("SELECT sluice.job_promote_scheduled(100)")
    assert (await cur.fetchone())[0] == 1
    assert (await fetch_job(db, due))["state"] == "ready"
    assert (await fetch_job(db, not_due))["state"] == "scheduled"
    assert await drain(listener, db, "sluice_jobs") == ["later"]
    cur = await db.execute("SELECT sluice.job_next_due()")
    assert (await cur.fetchone())[0] == (await fetch_job(db, not_due))["run_at"]


# -- pruning ------------------------------------------------------------------------


async def test_prune_deletes_old_finished_jobs_but_keeps_open_dead_letters(db):
    old_done = await make_job(db, "succeeded")
    old_dead = await make_job(db, "failed")
    discarded = await make_job(db, "failed")
    await db.execute("SELECT sluice.dead_letter_discard(%s)", (discarded,))
    recent = await make_job(db, "succeeded")
    pending = await insert_job(db)
    await db.execute(
        "UPDATE sluice.jobs SET finished_at = now() - interval '8 days' WHERE id <> %s", (recent,)
    )
    cur = await db.execute("SELECT sluice.job_prune('7 days', 1000)")
    assert (await cur.fetchone())[0] == 2
    left = {r["id"] for r in await rows(db, "SELECT id FROM sluice.jobs")}
    assert left == {old_dead, recent, pending}
    assert old_done not in left and discarded not in left
    assert await attempts(db, old_done) == []


async def test_prune_works_in_batches(db):
    for _ in range(5):
        await make_job(db, "succeeded")
    await db.execute("UPDATE sluice.jobs SET finished_at = now() - interval '2 days'")
    counts = []
    while True:
        cur = await db.execute("SELECT sluice.job_prune('1 day', 2)")
        counts.append((await cur.fetchone())[0])
        if counts[-1] == 0:
            break
    assert counts == [2, 2, 1, 0]


async def test_unfinished_jobs_cannot_be_deleted(db):
    job_id = await insert_job(db)
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await db.execute("DELETE FROM sluice.jobs WHERE id = %s", (job_id,))
    assert error.value.diag.constraint_name == "jobs_delete_finished"
