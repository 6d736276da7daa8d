"""Hostile values at the door, and maintenance that survives any admitted row.

Every value here was once accepted by the database and then crashed whatever
read it (a worker decoding the claim, the promoter reading the next due time)
or overflowed the engine's own arithmetic (the rescuer's backoff). Each is now
refused by a named constraint, or accepted and run to a terminal state.
"""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from psycopg.types.json import Jsonb

from sluice.core import engine, protocol
from tests.engine.invariants import assert_invariants
from tests.factories import WORKER, claim, complete, fail, fetch_job, insert_job, rows, scalar


def nested(levels: int) -> str:
    """A JSON array nested `levels` deep around one number."""
    return "[" * levels + "1" + "]" * levels


async def refused(conn, constraint, sql, *params):
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await conn.execute(sql, params or None)
    assert error.value.diag.constraint_name == constraint, error.value
    return error.value


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("run_at", "-infinity", "jobs_run_at_range"),
        ("run_at", "infinity", "jobs_run_at_range"),
        ("run_at", "0044-03-15 BC", "jobs_run_at_range"),
        ("run_at", "0001-01-01 00:00:00+14", "jobs_run_at_range"),
        ("run_at", "10000-01-01", "jobs_run_at_range"),
        ("run_at", "9999-12-31 23:59:59-14", "jobs_run_at_range"),
        ("timeout", "100000000 years", "jobs_timeout_max"),
        ("timeout", "0", "jobs_timeout_positive"),
        ("backoff_max", "1000000 years", "jobs_backoff_max"),
        ("max_attempts", 1001, "jobs_max_attempts_range"),
        ("max_attempts", 0, "jobs_max_attempts_range"),
    ],
)
async def test_a_hostile_value_is_refused_by_a_named_constraint(db, column, value, constraint):
    await refused(
        db,
        constraint,
        f"INSERT INTO sluice.jobs (task, {column}) VALUES ('noop', %s)",  # noqa: S608 - ours
        value,
    )
    # The same through sluice.enqueue, the psql-friendly door.
    await refused(db, constraint, f"SELECT sluice.enqueue('noop', {column} => %s)", value)
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 0


async def test_backoff_base_above_the_cap_is_refused(db):
    await refused(
        db,
        "jobs_backoff_max",
        "INSERT INTO sluice.jobs (task, backoff_base, backoff_max) VALUES ('noop', %s, %s)",
        "31 days",
        "31 days",
    )


async def test_a_payload_nested_thousands_of_levels_is_refused(db):
    error = await refused(
        db,
        "jobs_payload_depth",
        "INSERT INTO sluice.jobs (task, payload) VALUES ('noop', %s::jsonb)",
        nested(5000),
    )
    assert "job_payload" in str(error)


async def test_payload_nesting_is_allowed_up_to_100_levels(db):
    job_id = await insert_job(db, payload=Jsonb(json.loads(nested(100))))
    await claim(db, job_id)  # decodes in Python
    await refused(
        db,
        "jobs_payload_depth",
        "INSERT INTO sluice.jobs (task, payload) VALUES ('noop', %s::jsonb)",
        nested(101),
    )
    deep_object = "{" + '"a": {' * 100 + "}" * 101
    await refused(
        db,
        "jobs_payload_depth",
        "INSERT INTO sluice.jobs (task, payload) VALUES ('noop', %s::jsonb)",
        deep_object.replace("{}", '{"b": 1}'),
    )


async def test_the_api_batch_insert_meets_the_same_bounds(db):
    job = {"task": "noop", "payload": json.loads(nested(150)), "queue": "default", "priority": 0}
    job |= {"max_attempts": 5, "backoff": "exponential", "backoff_base": 1, "backoff_max": 60}
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await engine.job_submit_many(db, jobs=[job], tenant="default")
    assert error.value.diag.constraint_name == "jobs_payload_depth"


async def test_run_params_and_dag_definitions_are_bounded_too(db):
    definition = json.dumps({"nodes": [{"id": "a", "task": "noop"}]})
    await refused(
        db,
        "dag_runs_params_depth",
        "SELECT sluice.dag_run_create('default', %s::jsonb, %s::jsonb)",
        definition,
        json.dumps({"p": json.loads(nested(150))}),
    )
    await refused(
        db,
        "dags_definition_depth",
        "INSERT INTO sluice.dags (name, version, definition) VALUES ('d', 1, %s::jsonb)",
        json.dumps({"nodes": json.loads(nested(150))}),
    )
    deep_node = {"id": "a", "task": "noop", "payload": json.loads(nested(101))}
    await refused(
        db,
        "jobs_payload_depth",
        "SELECT sluice.dag_run_create('default', %s::jsonb)",
        json.dumps({"nodes": [deep_node]}),
    )


# -- max_attempts: a hand-back does not count, and always fits ------------------------


async def release(conn, job_id):
    job = await fetch_job(conn, job_id)
    released = await rows(
        conn,
        "SELECT id FROM sluice.job_release_many(%s, %s, %s) AS id",
        WORKER,
        [job_id],
        [job["attempt"]],
    )
    assert [r["id"] for r in released] == [job_id]


async def test_a_job_with_1000_attempts_can_be_handed_back_again_and_again(db):
    job_id = await insert_job(db, max_attempts=1000)
    for _ in range(3):
        await claim(db, job_id)
        await release(db, job_id)
    job = await fetch_job(db, job_id)
    assert (job["state"], job["attempt"], job["max_attempts"]) == ("ready", 3, 1003)
    await claim(db, job_id)
    assert await complete(db, job_id)
    assert (await fetch_job(db, job_id))["state"] == "succeeded"


async def test_a_handed_back_attempt_does_not_count(db):
    job_id = await insert_job(db, max_attempts=2, backoff_base="0")
    await claim(db, job_id)
    await release(db, job_id)
    outcomes = []
    for _ in range(2):
        await claim(db, job_id)
        outcomes.append((await fail(db, job_id))["state"])
    assert outcomes == ["ready", "failed"]  # two counted attempts, three made
    assert (await fetch_job(db, job_id))["attempt"] == 3


async def test_a_dlq_retry_of_a_1000_attempt_job_gives_a_fresh_round(db):
    job_id = await insert_job(db, max_attempts=1000)
    await claim(db, job_id)
    await release(db, job_id)
    await claim(db, job_id)
    await fail(db, job_id, retryable=False)
    assert await scalar(db, "SELECT sluice.retry_dead(%s)", job_id)
    job = await fetch_job(db, job_id)
    # A round of 1000 counted attempts from here: the hand-back is not in it.
    assert (job["state"], job["attempt"], job["max_attempts"]) == ("ready", 2, 1002)
    await claim(db, job_id)
    await release(db, job_id)
    await claim(db, job_id)
    await fail(db, job_id, retryable=False)
    assert await scalar(db, "SELECT sluice.retry_dead(%s)", job_id)
    assert (await fetch_job(db, job_id))["max_attempts"] == 4 + 1000


async def test_a_dlq_round_is_the_last_rounds_counted_attempts(db):
    job_id = await insert_job(db, max_attempts=3, backoff_base="0")
    await claim(db, job_id)
    await release(db, job_id)
    for _ in range(3):
        await claim(db, job_id)
        await fail(db, job_id)
    job = await fetch_job(db, job_id)
    assert (job["state"], job["attempt"]) == ("failed", 4)
    assert await scalar(db, "SELECT sluice.retry_dead(%s)", job_id)
    assert (await fetch_job(db, job_id))["max_attempts"] == 4 + 3


async def poison(conn, job_id, condition):
    """Make every update of running job `job_id` that meets `condition` (SQL on
    NEW) fail: something the constraints did not foresee."""
    await conn.execute("SELECT set_config('test.poison', %s, false)", (str(job_id),))
    await conn.execute(
        f"""
        CREATE FUNCTION public.poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = current_setting('test.poison')::bigint AND {condition} THEN
                RAISE EXCEPTION 'cannot update job %', NEW.id;
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER poison BEFORE UPDATE ON sluice.jobs
            FOR EACH ROW WHEN (OLD.state = 'running') EXECUTE FUNCTION public.poison();
        """
    )


async def expired_pair(conn):
    """Two running jobs whose leases expired: (the one to poison, a healthy one)."""
    pair = [await insert_job(conn, backoff_base="0") for _ in range(2)]
    for job_id in pair:
        await claim(conn, job_id)
    await conn.execute("UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second'")
    return pair


# -- maintenance survives any admitted row -----------------------------------------------


async def test_the_largest_backoff_admitted_does_not_overflow_the_rescue(db):
    job_id = await insert_job(db, backoff_base="30 days", backoff_max="30 days", max_attempts=1000)
    for _ in range(3):
        await claim(db, job_id)
        await db.execute(
            "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (job_id,),
        )
        [rescued] = await rows(db, "SELECT * FROM sluice.job_rescue_expired(10)")
        assert rescued["state"] == "scheduled"
        assert rescued["run_at"] <= dt.datetime.now(dt.UTC) + dt.timedelta(days=30, minutes=1)
        await db.execute("UPDATE sluice.jobs SET run_at = now() WHERE id = %s", (job_id,))
        assert await scalar(db, "SELECT sluice.job_promote_scheduled(10)") == 1
    delay = await scalar(
        db,
        "SELECT sluice.backoff_delay('exponential', '30 days', '30 days', 2147483647, 0.999)",
    )
    assert delay == dt.timedelta(days=30)


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"])
async def test_the_extreme_run_ats_admitted_decode_in_any_time_zone(db, zone):
    await db.execute(f"SET TimeZone = '{zone}'")
    late = await insert_job(db, run_at="8999-12-31 23:59:59.999999+00")
    early = await insert_job(db, run_at="1900-01-01 00:00:00+00")
    due = await scalar(db, "SELECT sluice.job_next_due()")
    assert due.year == 8999 or (due.year == 9000 and zone == "Pacific/Kiritimati")
    assert await scalar(db, "SELECT sluice.job_promote_scheduled(10)") == 0
    [job] = await protocol.job_claim(
        db, worker_id=WORKER, queues=["default"], limit=10, lease=dt.timedelta(seconds=30)
    )
    assert job.id == early
    assert (await fetch_job(db, late))["state"] == "scheduled"


async def test_prune_and_promote_take_the_earliest_admitted_times(db):
    job_id = await insert_job(db, run_at="1900-01-01 00:00:00+00")
    await claim(db, job_id)
    assert await complete(db, job_id)
    await db.execute(
        "UPDATE sluice.jobs SET finished_at = '1900-01-01 00:00:00+00' WHERE id = %s", (job_id,)
    )
    assert await scalar(db, "SELECT sluice.job_prune('1 day', 10)") == 1


async def test_a_job_the_rescue_cannot_retry_fails_alone_and_the_others_are_rescued(db):
    bad, healthy = await expired_pair(db)
    await poison(db, bad, "NEW.state <> 'failed'")  # it cannot be scheduled again
    rescued = await rows(db, "SELECT * FROM sluice.job_rescue_expired(10) ORDER BY id")
    assert [(r["id"], r["state"]) for r in rescued] == [(bad, "failed"), (healthy, "ready")]
    job = await fetch_job(db, bad)
    assert job["reason"] == "non_retryable"
    assert f"cannot update job {bad}" in job["last_error"]
    await assert_invariants(db)


async def test_a_job_that_cannot_even_fail_stays_running_and_the_others_are_rescued(db):
    bad, healthy = await expired_pair(db)
    await poison(db, bad, "true")
    rescued = await rows(db, "SELECT * FROM sluice.job_rescue_expired(10)")
    assert [(r["id"], r["state"]) for r in rescued] == [(healthy, "ready")]
    assert (await fetch_job(db, bad))["state"] == "running"


# -- edges: tenants, and the released child's state ------------------------------------


async def test_an_edge_across_tenants_is_refused(db):
    parent = await insert_job(db, tenant="alpha")
    child = await insert_job(db, tenant="beta")
    error = await refused(
        db, "job_edges_same_tenant", "INSERT INTO sluice.job_edges VALUES (%s, %s)", parent, child
    )
    assert "alpha" in str(error) and "beta" in str(error)
    assert (await fetch_job(db, child))["state"] == "ready"
    await claim(db, parent)
    await fail(db, parent, retryable=False)
    assert (await fetch_job(db, child))["state"] == "ready"  # not cancelled by another tenant


async def test_a_child_created_after_its_parents_completion_began_is_released_ready(db, connect):
    parent = await insert_job(db)
    await claim(db, parent)
    completer, creator = await connect(), await connect()
    async with completer.transaction():
        await completer.execute("SELECT now()")  # this transaction's now() is fixed here
        async with creator.transaction():
            child = await insert_job(creator)  # run_at: a later now()
            await creator.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (parent, child))
        assert await complete(completer, parent)
    assert (await fetch_job(db, child))["state"] == "ready"


async def test_a_claimed_payload_decodes_as_json_would_whatever_it_holds(db):
    """The claim decodes payloads with msgspec (protocol._JsonbLoader); every value
    PostgreSQL stores must come out as json.loads made it, the numbers msgspec
    refuses included: 400 digits with a fraction (past a float's range, read as
    inf), integers of any size, -0, exponents jsonb writes out in full."""
    payloads = [
        "{}",
        '{"big": 1' + "0" * 400 + ".5}",
        '{"neg": -1' + "0" * 400 + ".5}",
        '{"int": 123456789012345678901234567890, "tiny": 1e-300, "exp": 1.5e300}',
        '{"zero": -0, "f": -0.0, "n": null, "b": [true, false]}',
        '{"s": "\\u00e9\\ud83d\\ude00 \\t\\n\\""}',
        nested(100),
    ]
    ids = [
        await scalar(
            db, "INSERT INTO sluice.jobs (task, payload) VALUES ('noop', %s) RETURNING id", p
        )
        for p in payloads
    ]
    stored = {
        r["id"]: json.loads(r["text"])
        for r in await rows(db, "SELECT id, payload::text AS text FROM sluice.jobs")
    }
    jobs = await protocol.job_claim(
        db, worker_id=WORKER, queues=["default"], limit=10, lease=dt.timedelta(seconds=30)
    )
    assert sorted(job.id for job in jobs) == sorted(ids)
    for job in jobs:
        assert job.problem is None
        assert job.payload == stored[job.id]
        assert json.dumps(job.payload) == json.dumps(stored[job.id])  # same types, not just equal
