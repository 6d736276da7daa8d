"""Enqueue from plain SQL: defaults, the state the database decides, the wake-up
NOTIFY, and clear errors for bad rows."""

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.engine.notifications import drain, listen, wait_on
from tests.factories import fetch_job, insert_job, scalar


async def test_minimal_insert_gets_defaults_and_is_ready(db):
    cur = await db.execute(
        "INSERT INTO sluice.jobs (task, payload) VALUES ('noop', '{}') RETURNING id, state"
    )
    job_id, state = await cur.fetchone()
    assert state == "ready"
    job = await fetch_job(db, job_id)
    assert job["queue"] == "default"
    assert job["tenant"] == "default"
    assert job["priority"] == 0
    assert job["attempt"] == 0
    assert job["max_attempts"] == 5
    assert job["pending_parents"] == 0
    assert job["run_at"] == job["created_at"]


async def test_a_plain_job_row_stays_narrow(db):
    """Every byte of a row is written to the WAL three times in a job's life (insert,
    claim, completion): the default retry policy is stored as null, and the
    columns are ordered so that no padding falls between them (13_jobs.sql)."""
    job_id = await insert_job(db)
    cur = await db.execute(
        "SELECT backoff, backoff_base, backoff_max, pg_column_size(j.*) FROM sluice.jobs j"
        " WHERE id = %s",
        (job_id,),
    )
    backoff, base, cap, size = await cur.fetchone()
    assert (backoff, base, cap) == (None, None, None)
    assert size <= 104, size  # 152 bytes before (issue 15)


async def test_future_run_at_is_scheduled_and_past_is_ready(db):
    future = await insert_job(db, run_at="2999-01-01")
    past = await insert_job(db, run_at="2000-01-01")
    assert (await fetch_job(db, future))["state"] == "scheduled"
    assert (await fetch_job(db, past))["state"] == "ready"


async def test_enqueue_function_matches_a_plain_insert(db):
    """sluice.enqueue's defaults are the table's defaults."""
    cur = await db.execute("SELECT sluice.enqueue('noop')")
    via_function = await fetch_job(db, (await cur.fetchone())[0])
    via_insert = await fetch_job(db, await insert_job(db))
    ignored = {"id", "run_at", "created_at"}
    assert {k: v for k, v in via_function.items() if k not in ignored} == {
        k: v for k, v in via_insert.items() if k not in ignored
    }


@pytest.mark.parametrize("state", ["blocked", "running", "succeeded", "failed", "cancelled"])
async def test_a_job_cannot_be_inserted_in_another_state(db, state):
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await insert_job(db, state=state)
    assert error.value.diag.constraint_name == "jobs_inserted_pending"
    assert state in str(error.value)


@pytest.mark.parametrize(
    ("columns", "constraint"),
    [
        ({"task": ""}, "task_name_valid"),
        ({"task": "rm -rf /"}, "task_name_valid"),
        ({"queue": "no spaces allowed"}, "queue_name_valid"),
        ({"tenant": ""}, "tenant_name_valid"),
        ({"max_attempts": 0}, "jobs_max_attempts_range"),
        ({"backoff": "random"}, "jobs_backoff_valid"),
        ({"backoff_base": "10 seconds", "backoff_max": "1 second"}, "jobs_backoff_range"),
        ({"backoff_base": "2 hours"}, "jobs_backoff_range"),  # above the default max, 1 hour
        ({"backoff_max": "0.5 seconds"}, "jobs_backoff_range"),  # below the default base, 1 second
        ({"backoff_base": "-1 second"}, "jobs_backoff_range"),
        ({"backoff_max": "-1 second"}, "jobs_backoff_range"),
        ({"backoff_max": "31 days"}, "jobs_backoff_max"),
        ({"parents_failed": -1}, "jobs_parents_failed_valid"),
        ({"attempt": -1}, "jobs_attempt_valid"),
        ({"group_id": 1, "map_index": -1}, "jobs_map_index_valid"),
        ({"pending_parents": -1}, "jobs_pending_parents_match_state"),
        ({"timeout": "0 seconds"}, "jobs_timeout_positive"),
        ({"node": "a"}, "jobs_node_in_run"),
        ({"pending_parents": 2}, "jobs_pending_parents_match_state"),
        ({"notify": {"webhook": {"url": "ftp://x"}}}, "notify_spec_valid"),
        ({"notify": {"email": {"to": ["not-an-address"]}}}, "notify_spec_valid"),
        ({"notify": {"webhook": {"url": "https://x", "on": ["exploded"]}}}, "notify_spec_valid"),
        ({"notify": {"sms": {}}}, "notify_spec_valid"),
    ],
)
async def test_bad_rows_are_refused_by_a_named_constraint(db, columns, constraint):
    task = columns.pop("task", "noop")
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await insert_job(db, task, **columns)
    assert error.value.diag.constraint_name == constraint
    cur = await db.execute("SELECT count(*) FROM sluice.jobs")
    assert await cur.fetchone() == (0,)


@pytest.mark.parametrize(
    ("column", "constraint"),
    [("attempt", "jobs_attempt_valid"), ("map_index", "jobs_map_index_valid")],
)
async def test_an_update_out_of_a_domain_bound_is_refused_by_its_name(db, column, constraint):
    """attempt and map_index are bounded by their domains (13_jobs.sql), which an
    UPDATE checks as the former table CHECKs did."""
    job_id = await insert_job(db, group_id=1, map_index=0)
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await db.execute(f"UPDATE sluice.jobs SET {column} = -1 WHERE id = %s", (job_id,))  # noqa: S608 - our names
    assert error.value.diag.constraint_name == constraint


async def test_single_column_bounds_are_domains_not_table_checks(db):
    """PostgreSQL rebuilds every table CHECK from its stored text at each INSERT
    and UPDATE statement (13_jobs.sql): a bound on one column is its domain's,
    so the table keeps only the CHECKs that compare columns."""
    single = await scalar(
        db,
        "SELECT coalesce(array_agg(conname::text ORDER BY conname), '{}') FROM pg_constraint"
        " WHERE conrelid = 'sluice.jobs'::regclass AND contype = 'c' AND cardinality(conkey) = 1",
    )
    assert single == []


async def test_the_engine_insert_setting_is_read_at_every_statement(db):
    """jobs_before_insert's WHEN clause folds sluice.engine_inserting() once per
    statement (30_jobs_triggers.sql): the same prepared INSERT is refused, then
    accepted while the engine's setting is on, then refused again, in one
    transaction; a DAG run created in between changes nothing for later rows."""
    blocked = "INSERT INTO sluice.jobs (task, state, pending_parents) VALUES ('noop', 'blocked', 1)"

    async def refused() -> None:
        with pytest.raises(psycopg.errors.CheckViolation) as error:
            async with db.transaction():
                await db.execute(blocked, prepare=True)
        assert error.value.diag.constraint_name == "jobs_inserted_pending"

    async with db.transaction():
        await refused()
        await db.execute("SELECT set_config('sluice.engine_insert', 'on', true)")
        for _ in range(3):
            await db.execute(blocked, prepare=True)
        await db.execute("SELECT set_config('sluice.engine_insert', 'off', true)")
        await refused()
        nodes = [{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": ["a"]}]
        await db.execute("SELECT sluice.dag_run_create('default', %s)", (Jsonb({"nodes": nodes}),))
        await refused()
    # The three inserted while the setting was on, and the run's second node.
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE state = 'blocked'") == 4


async def test_a_valid_notify_is_accepted(db):
    notify = {
        "webhook": {"url": "https://hooks.example.com/x", "secret": "s", "on": ["failed"]},
        "email": {"to": ["ops@example.com"]},
    }
    job_id = await insert_job(db, notify=notify)
    assert (await fetch_job(db, job_id))["notify"] == notify


async def test_one_notify_per_statement_and_queue(db, connect):
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "default", "reports")
    # 10,000 rows over two queues in one statement: two notifications, not 10,000.
    await db.execute(
        "INSERT INTO sluice.jobs (task, queue) "
        "SELECT 'noop', CASE WHEN i % 2 = 0 THEN 'default' ELSE 'reports' END "
        "FROM generate_series(1, 10000) i"
    )
    assert sorted(await drain(listener, db, "sluice_jobs")) == ["default", "reports"]


async def test_statements_in_one_transaction_notify_once_per_queue(db, connect):
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "default")
    async with db.transaction():
        for _ in range(5):
            await insert_job(db)
    # PostgreSQL folds identical notifications of one transaction into one.
    assert await drain(listener, db, "sluice_jobs") == ["default"]


async def test_scheduled_jobs_do_not_wake_workers(db, connect):
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "default")
    await insert_job(db, run_at="2999-01-01")
    assert await drain(listener, db, "sluice_jobs") == []


async def test_a_rolled_back_insert_notifies_no_one(db, connect):
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "default")
    with pytest.raises(psycopg.errors.CheckViolation):
        async with db.transaction():
            await insert_job(db)
            await insert_job(db, queue="bad queue")
    assert await drain(listener, db, "sluice_jobs") == []


async def test_insert_in_the_callers_transaction_is_invisible_until_commit(db, connect):
    other = await connect()
    async with db.transaction():
        job_id = await insert_job(db, payload=Jsonb({"order": 1}))
        cur = await other.execute("SELECT count(*) FROM sluice.jobs WHERE id = %s", (job_id,))
        assert await cur.fetchone() == (0,)
    cur = await other.execute("SELECT count(*) FROM sluice.jobs WHERE id = %s", (job_id,))
    assert await cur.fetchone() == (1,)


# Which states may count parents (docs/state-machine.md): blocked has some;
# waiting, failed, cancelled and skipped some or none; every other state none.
MAY_COUNT_PARENTS = {"waiting", "failed", "cancelled", "skipped"}


async def test_pending_parents_match_state_has_the_documented_truth_table(db):
    """jobs_pending_parents_match_state, evaluated as stored for every state and a
    count below, at and above zero (it is written without CASE, for its cost)."""
    definition = await scalar(
        db,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'sluice.jobs'::regclass"
        " AND conname = 'jobs_pending_parents_match_state'",
    )
    assert definition.startswith("CHECK ")
    cur = await db.execute(
        f"SELECT state::text, pending_parents, {definition.removeprefix('CHECK ')}"  # noqa: S608 - the catalog's text
        " FROM unnest(enum_range(NULL::sluice.job_state)) AS state,"
        " (VALUES (-1), (0), (1), (2)) AS counts(pending_parents)"
    )
    seen = {(state, count): ok for state, count, ok in await cur.fetchall()}
    assert len(seen) == 9 * 4
    for (state, count), ok in seen.items():
        if state == "blocked":
            assert ok is (count > 0), (state, count)
        elif state in MAY_COUNT_PARENTS:
            assert ok is (count >= 0), (state, count)
        else:
            assert ok is (count == 0), (state, count)
