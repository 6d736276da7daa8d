"""A small hot table: sluice.jobs is partitioned into a live partition and
history partitions by archive day (sql/schema/13_jobs.sql, 47_history.sql).

Finished jobs leave the claim path in the UPDATE that ends them, the engine's
hot statements never touch history, revivals bring rows back, the database
refuses a finished job left live, retention drops whole partitions with what
hangs off their jobs, and a row moved to history under a concurrent statement
(40001 even in READ COMMITTED) never reaches a caller as an error."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import psycopg
import pytest
from psycopg.types.json import Jsonb

from sluice.core import protocol
from sluice.worker.pruner import Pruner
from tests.engine.test_races import together
from tests.factories import (
    WORKER,
    claim,
    complete,
    fetch_job,
    insert_job,
    make_job,
    rows,
    scalar,
)

ROUNDS = 200

PARTITION = "SELECT tableoid::regclass::text FROM sluice.jobs WHERE id = %s"

# Reads and index probes of the history partitions by this backend (not yet reported).
HISTORY_SCANS = """
SELECT coalesce(sum(s.seq_scan + coalesce(s.idx_scan, 0)), 0)
  FROM pg_stat_xact_user_tables s
  JOIN sluice.history_partitions p ON p.partition = s.relid"""


async def partition(db, job_id) -> str:
    return await scalar(db, PARTITION, job_id)


async def old_partition(db, day: str = "2020-01-01") -> str:
    """A history partition for a day long past, as if the database were old."""
    name = "jobs_h" + day.replace("-", "")
    await db.execute(
        "SELECT sluice.history_partition_create(%s, %s::timestamptz,"
        " %s::timestamptz + interval '1 day')",
        (name, f"{day} 00:00:00+00", f"{day} 00:00:00+00"),
    )
    return f"sluice.{name}"


async def age(db, job_ids, day: str = "2020-01-01") -> None:
    """Move finished jobs into that day's partition (row movement, as a completion does)."""
    await db.execute(
        "UPDATE sluice.jobs SET archived_at = %s::timestamptz + interval '12 hours',"
        " finished_at = %s::timestamptz + interval '12 hours' WHERE id = ANY(%s)",
        (f"{day} 00:00:00+00", f"{day} 00:00:00+00", list(job_ids)),
    )


# -- where rows live ------------------------------------------------------------------


async def test_every_database_has_its_partitions_ahead(db):
    # (One more when the template was made yesterday.)
    assert await scalar(db, "SELECT sluice.history_prepare()") <= 2
    assert await scalar(db, "SELECT sluice.history_prepare()") == 0, "nothing left to make"
    ahead = await rows(
        db,
        "SELECT name FROM sluice.history_partitions"
        " WHERE coalesce(upper_bound, 'infinity') > now() ORDER BY lower_bound",
    )
    assert len(ahead) == 9 and ahead[-1]["name"] == "jobs_hlater"


async def test_an_empty_overflow_is_cut_again_further_ahead(db):
    await db.execute("SELECT sluice.history_prepare()")  # the template may be from yesterday
    assert await scalar(db, "SELECT sluice.history_prepare(9)") == 3  # two days and the overflow
    bounds = await rows(
        db,
        "SELECT name FROM sluice.history_partitions"
        " WHERE coalesce(upper_bound, 'infinity') > now() ORDER BY lower_bound",
    )
    assert len(bounds) == 11 and bounds[-1]["name"] == "jobs_hlater"


async def test_making_a_partition_waits_for_no_reader_or_writer_of_live_jobs(db, connect):
    """Attaching a day to sluice.jobs_history locks nothing of the live partition:
    a transaction held open after reading and inserting live jobs does not hold
    it up. Dropping the empty overflow (to cut it further ahead) takes ACCESS
    EXCLUSIVE on jobs_history: a reader of history holds that up, and
    history_prepare gives up after its lock_timeout with nothing made, rather
    than queueing completions behind it."""
    await db.execute("SELECT sluice.history_prepare()")  # the template may be from yesterday
    made = "SELECT count(*) FROM sluice.history_partitions"
    live = await connect()
    await live.execute("BEGIN")
    await live.execute("SELECT count(*) FROM sluice.jobs WHERE archived_at IS NULL")
    await live.execute("INSERT INTO sluice.jobs (task) VALUES ('noop')")
    assert await scalar(db, "SELECT sluice.history_prepare(9)") == 3
    reader = await connect()
    await reader.execute("BEGIN")
    await reader.execute("SELECT count(*) FROM sluice.jobs WHERE archived_at IS NOT NULL")
    before = await scalar(db, made)
    with pytest.raises(psycopg.errors.LockNotAvailable):
        await db.execute("SELECT sluice.history_prepare(11)")
    assert await scalar(db, made) == before
    await reader.rollback()
    assert await scalar(db, "SELECT sluice.history_prepare(11)") == 3
    await live.rollback()


async def test_the_live_partitions_constraint_does_not_grow_with_the_days_kept(db):
    """PostgreSQL checks a row against its partition's constraint at every insert
    and update of live jobs: that check must not cost more with each day of
    history kept (as a default partition's would: the negation of all others)."""
    constraint = "SELECT pg_get_partition_constraintdef('sluice.jobs_live'::regclass)"
    before = await scalar(db, constraint)
    assert await scalar(db, "SELECT sluice.history_prepare(40)") > 30
    assert await scalar(db, constraint) == before


async def test_a_job_moves_to_history_when_it_ends_and_stays_live_while_it_can_change(db):
    done = await make_job(db, "succeeded")
    cancelled = await make_job(db, "cancelled")
    dead = await make_job(db, "failed")
    pending, running = await insert_job(db), await make_job(db, "running")
    today = await scalar(
        db, "SELECT 'sluice.jobs_h' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')"
    )
    assert await partition(db, done) == today
    assert await partition(db, cancelled) == today
    for job_id in (dead, pending, running):
        assert await partition(db, job_id) == "sluice.jobs_live"
        assert (await fetch_job(db, job_id))["archived_at"] is None
    # Out of the dead-letter queue, the failed job is history too.
    assert await scalar(db, "SELECT sluice.discard_dead(%s)", dead) is True
    assert await partition(db, dead) == today


async def test_an_update_that_ends_a_job_without_archiving_it_is_refused(db):
    job_id = await insert_job(db)
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        await db.execute("UPDATE sluice.jobs SET state = 'cancelled' WHERE id = %s", (job_id,))
    assert refused.value.diag.constraint_name == "jobs_live_pending"
    await db.rollback()
    done = await make_job(db, "succeeded")
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        await db.execute("UPDATE sluice.jobs SET state = 'ready' WHERE id = %s", (done,))
    assert refused.value.diag.constraint_name == "jobs_history_finished"


async def test_a_retry_moves_cancelled_descendants_back_to_the_live_partition(db):
    parent = await make_job(db, "running")
    child = await scalar(
        db, "SELECT sluice.enqueue('noop', depends_on => ARRAY[%s::bigint])", parent
    )
    await db.execute(
        "SELECT sluice.job_fail_many(%s, ARRAY[%s::bigint], '{1}', '{boom}', '{false}')",
        (WORKER, parent),
    )
    assert (await fetch_job(db, child))["state"] == "cancelled"
    assert await partition(db, child) != "sluice.jobs_live"
    assert await scalar(db, "SELECT sluice.retry_dead(%s)", parent) is True
    revived = await fetch_job(db, child)
    assert (revived["state"], revived["archived_at"]) == ("blocked", None)
    assert await partition(db, child) == "sluice.jobs_live"
    await claim(db, parent)
    assert await complete(db, parent)
    assert (await fetch_job(db, child))["state"] == "ready"


async def test_a_rerun_brings_succeeded_nodes_back_and_keeps_their_attempts(db):
    definition = {
        "nodes": [{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": ["a"]}]
    }
    run_id = await scalar(db, "SELECT sluice.dag_run_create('default', %s)", json.dumps(definition))
    ids = {
        r["node"]: r["id"]
        for r in await rows(db, "SELECT node, id FROM sluice.jobs WHERE run_id = %s", run_id)
    }
    for node in ("a", "b"):
        await claim(db, ids[node])
        assert await complete(db, ids[node], {"node": node})
    assert await scalar(db, "SELECT sluice.rerun_from(%s, 'a')", run_id) == 2
    for node in ("a", "b"):
        assert await partition(db, ids[node]) == "sluice.jobs_live"
    assert (await fetch_job(db, ids["a"]))["state"] == "ready"
    assert (
        await scalar(db, "SELECT count(*) FROM sluice.job_attempts WHERE job_id = %s", ids["a"])
        == 1
    )


async def test_a_child_reads_its_parents_results_from_history(db):
    definition = {
        "nodes": [
            {"id": "a", "task": "noop"},
            {
                "id": "b",
                "task": "noop",
                "depends_on": ["a"],
                "payload": {"got": "{{ nodes.a.result }}"},
            },
        ]
    }
    run_id = await scalar(db, "SELECT sluice.dag_run_create('default', %s)", json.dumps(definition))
    ids = {
        r["node"]: r["id"]
        for r in await rows(db, "SELECT node, id FROM sluice.jobs WHERE run_id = %s", run_id)
    }
    await claim(db, ids["a"])
    assert await complete(db, ids["a"], {"rows": 3})
    assert await partition(db, ids["a"]) != "sluice.jobs_live"
    assert (await fetch_job(db, ids["b"]))["payload"] == {"got": {"rows": 3}}
    assert await scalar(db, "SELECT sluice.job_parent_results(%s)", ids["b"]) == {"a": {"rows": 3}}


# -- keys and edges without foreign keys ------------------------------------------------


async def test_a_key_stays_taken_while_its_job_is_in_history(db):
    first = await scalar(db, "SELECT sluice.enqueue('noop', idempotency_key => 'k')")
    await claim(db, first)
    assert await complete(db, first)
    assert await partition(db, first) != "sluice.jobs_live"
    assert await scalar(db, "SELECT sluice.enqueue('noop', idempotency_key => 'k')") == first
    with pytest.raises(psycopg.errors.UniqueViolation) as refused:
        await insert_job(db, idempotency_key="k")
    assert refused.value.diag.constraint_name == "jobs_idempotency_key"


async def test_an_edge_to_a_job_that_does_not_exist_is_refused_as_the_foreign_key_did(db):
    child = await insert_job(db)
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as refused:
        await db.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (child + 1000, child))
    assert refused.value.diag.constraint_name == "job_edges_parent_id_fkey"
    await db.rollback()
    parent = await make_job(db, "succeeded")  # in history: still a parent one may name
    await db.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (parent, child))
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as refused:
        await db.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (parent, child + 1000))
    assert refused.value.diag.constraint_name == "job_edges_child_id_fkey"


SATELLITES = """
SELECT ARRAY[(SELECT count(*) FROM sluice.job_edges WHERE parent_id = %(id)s OR child_id = %(id)s),
             (SELECT count(*) FROM sluice.dead_letters WHERE job_id = %(id)s),
             (SELECT count(*) FROM sluice.job_keys WHERE job_id = %(id)s),
             (SELECT count(*) FROM sluice.job_attempt_log WHERE job_id = %(id)s)]"""


async def satellites(db, job_id) -> list[int]:
    """Edges, dead letters, keys and logged attempts of a job."""
    cur = await db.execute(SATELLITES, {"id": job_id})
    return (await cur.fetchone())[0]


async def failed_parent_of_a_child(db, key):
    """A job that failed (its dead letter discarded) and its cancelled child."""
    parent = await make_job(db, "running", idempotency_key=key)
    child = await scalar(
        db, "SELECT sluice.enqueue('noop', depends_on => ARRAY[%s::bigint])", parent
    )
    await db.execute(
        "SELECT sluice.job_fail_many(%s, ARRAY[%s::bigint], '{1}', '{boom}', '{false}')",
        (WORKER, parent),
    )
    await db.execute("SELECT sluice.discard_dead(%s)", (parent,))
    assert (await fetch_job(db, child))["state"] == "cancelled"
    return parent, child


async def test_deleting_jobs_takes_their_edges_letters_keys_and_attempts(db):
    parent, child = await failed_parent_of_a_child(db, "gone")
    await db.execute("DELETE FROM sluice.jobs WHERE id = ANY(%s)", ([parent, child],))
    assert await satellites(db, parent) == [0, 0, 0, 0]


# -- retention --------------------------------------------------------------------------


async def test_retiring_drops_old_partitions_with_their_satellites_and_pins_live_runs(db):
    old = await old_partition(db)
    # A finished job with everything that hangs off a job.
    job, child = await failed_parent_of_a_child(db, "old-key")
    # A run still going, one of whose nodes finished long ago.
    definition = {
        "nodes": [{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": ["a"]}]
    }
    run_id = await scalar(db, "SELECT sluice.dag_run_create('default', %s)", json.dumps(definition))
    node_a = await scalar(db, "SELECT id FROM sluice.jobs WHERE run_id = %s AND node = 'a'", run_id)
    await claim(db, node_a)
    assert await complete(db, node_a, {"kept": True})
    await age(db, [job, child, node_a])
    assert await partition(db, job) == old
    kept = await make_job(db, "succeeded")

    assert await scalar(db, "SELECT sluice.history_retire('7 days')") == 1
    assert await scalar(db, "SELECT to_regclass(%s)", old) is None
    assert (
        await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE id = ANY(%s)", [job, child]) == 0
    )
    assert await satellites(db, job) == [0, 0, 0, 0]
    # The key is free again; the pinned node moved to today, its result readable.
    assert await scalar(db, "SELECT sluice.enqueue('noop', idempotency_key => 'old-key')") != job
    pinned = await fetch_job(db, node_a)
    assert (pinned["state"], pinned["result"]) == ("succeeded", {"kept": True})
    assert await partition(db, node_a) != old
    assert await partition(db, kept) != old
    assert await scalar(db, "SELECT sluice.history_retire('7 days')") == 0


async def test_retiring_deletes_finished_runs_left_without_jobs(db):
    await old_partition(db)
    definition = {"nodes": [{"id": "a", "task": "noop"}]}
    run_id = await scalar(db, "SELECT sluice.dag_run_create('default', %s)", json.dumps(definition))
    node = await scalar(db, "SELECT id FROM sluice.jobs WHERE run_id = %s", run_id)
    await claim(db, node)
    assert await complete(db, node)
    await db.execute(
        "UPDATE sluice.dag_runs SET finished_at = '2020-01-01 13:00+00' WHERE id = %s", (run_id,)
    )
    await age(db, [node])
    assert await scalar(db, "SELECT sluice.history_retire('7 days')") == 1
    assert await scalar(db, "SELECT count(*) FROM sluice.dag_runs WHERE id = %s", run_id) == 0


# -- the claim path stays on the live partition ---------------------------------------


async def test_the_hot_statements_never_read_a_history_partition(db):
    """Claim, heartbeat, progress, complete, fail (retry and dead letter),
    release, rescue and promote name archived_at IS NULL: their plans touch the
    live partition only, whatever history holds."""
    for _ in range(3):
        await make_job(db, "succeeded")
        await make_job(db, "cancelled")
    ids = [await insert_job(db, max_attempts=1 if i == 2 else 5) for i in range(6)]
    await db.execute("ANALYZE sluice.jobs")
    async with db.transaction():
        # The counters of this backend not yet reported count too: take a difference.
        before = await scalar(db, HISTORY_SCANS)
        claimed = await rows(
            db,
            "SELECT id, attempt FROM sluice.job_claim(%s, '{default}', 10, '30 seconds')",
            WORKER,
        )
        assert sorted(r["id"] for r in claimed) == ids
        every, attempts = [r["id"] for r in claimed], [r["attempt"] for r in claimed]
        await db.execute(
            "SELECT * FROM sluice.job_heartbeat(%s, %s, %s, '30 seconds')",
            (WORKER, every, attempts),
        )
        await db.execute(
            "SELECT sluice.job_progress(%s, %s, 1, %s)", (WORKER, ids[0], Jsonb({"done": 1}))
        )
        await db.execute(
            "SELECT * FROM sluice.job_complete_many(%s, %s, '{1,1}', '{null,null}'::jsonb[])",
            (WORKER, ids[:2]),
        )
        await db.execute(
            "SELECT * FROM sluice.job_fail_many(%s, %s, '{1,1}', '{boom,boom}', '{true,true}')",
            (WORKER, ids[2:4]),
        )
        await db.execute("SELECT * FROM sluice.job_release_many(%s, %s, '{1}')", (WORKER, ids[4:5]))
        await db.execute(
            "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second'"
            " WHERE id = %s AND archived_at IS NULL",
            (ids[5],),
        )
        await db.execute("SELECT * FROM sluice.job_rescue_expired(10)")
        await db.execute("SELECT sluice.job_promote_scheduled(10)")
        await db.execute("SELECT sluice.job_next_due()")
        assert await scalar(db, HISTORY_SCANS) == before
    assert await partition(db, ids[0]) != "sluice.jobs_live"


async def test_the_live_partition_holds_only_live_jobs_however_much_history(db):
    await db.execute("INSERT INTO sluice.jobs (task) SELECT 'noop' FROM generate_series(1, 2000)")
    while await rows(
        db, "SELECT id FROM sluice.job_claim(%s, '{default}', 500, '1 minute')", WORKER
    ):
        await db.execute(
            "SELECT sluice.job_complete_many(%s, array_agg(id), array_agg(attempt),"
            " array_agg(null::jsonb)) FROM sluice.jobs WHERE state = 'running'",
            (WORKER,),
        )
    await insert_job(db)
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs_live") == 1
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 2001


# -- rows moved under a concurrent statement -------------------------------------------


async def claim_ids(conn, limit=3):
    return [
        r["id"]
        for r in await rows(
            conn, "SELECT id FROM sluice.job_claim(%s, '{race}', %s, '1 minute')", WORKER, limit
        )
    ]


async def door_claim_ids(conn, limit=3):
    """The worker's claim: job_claim_once through its door, which runs it again
    on a moved row."""
    jobs = await protocol.job_claim(
        conn, worker_id=WORKER, queues=["race"], limit=limit, lease=dt.timedelta(minutes=1)
    )
    return [job.id for job in jobs]


@pytest.mark.slow
@pytest.mark.parametrize("claim", [claim_ids, door_claim_ids], ids=["sql", "door"])
async def test_claims_racing_a_claim_and_completion_never_fail_nor_claim_twice(db, connect, claim):
    """Two claimers and a third client that claims and completes in one
    transaction, released together on the same few jobs: a claimer whose
    snapshot still sees a job as ready finds it moved to history (40001 inside
    job_claim, which runs its statement again; or inside job_claim_once, the
    worker's claim, whose door protocol.job_claim runs it again); no caller sees
    an error, and every job is claimed once."""
    one, two, three = await connect(), await connect(), await connect()
    taken: dict[str, list[int]] = {"one": [], "two": [], "three": []}
    errors = []

    async def claim_into(conn, name):
        taken[name] += await claim(conn)

    async def claim_and_complete(conn):
        async with conn.transaction():
            ids = await claim_ids(conn)
            taken["three"].extend(ids)
            if ids:
                await conn.execute(
                    "SELECT sluice.job_complete_many(%s, %s, array_fill(1, ARRAY[%s]),"
                    " array_fill(null::jsonb, ARRAY[%s]))",
                    (WORKER, ids, len(ids), len(ids)),
                )

    for _ in range(ROUNDS):
        await db.execute(
            "INSERT INTO sluice.jobs (task, queue) SELECT 'noop', 'race' FROM generate_series(1, 3)"
        )
        errors += [
            e
            for e in await together(
                claim_into(one, "one"), claim_into(two, "two"), claim_and_complete(three)
            )
            if e is not None
        ]
        await db.execute(
            "UPDATE sluice.jobs SET state = 'cancelled', archived_at = now(),"
            " lease_expires_at = NULL, finished_at = now()"
            " WHERE queue = 'race' AND archived_at IS NULL"
        )
    assert errors == []
    every = taken["one"] + taken["two"] + taken["three"]
    assert len(every) == len(set(every)) == 3 * ROUNDS
    assert await scalar(db, "SELECT max(attempt) FROM sluice.jobs WHERE queue = 'race'") == 1


async def test_the_claim_door_runs_a_claim_that_met_a_moved_row_again_outside_a_transaction(
    db, connect, monkeypatch
):
    """protocol.job_claim on a connection in no transaction: a claim that failed
    with 40001 (claimed nothing) is run again and answers the job. Inside the
    caller's transaction, which the failure aborted, the error goes to the caller."""
    real = protocol.fetch_tolerant
    failures: list[int] = []

    async def moved_once(conn, *args, **kwargs):
        if not failures:
            failures.append(1)
            await conn.execute(
                "DO $$BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure',"
                " MESSAGE = 'tuple to be locked was already moved to another partition'; END$$"
            )
        return await real(conn, *args, **kwargs)

    monkeypatch.setattr(protocol, "fetch_tolerant", moved_once)
    job_id = await insert_job(db, queue="race")
    assert await door_claim_ids(await connect(autocommit=True)) == [job_id]
    assert failures == [1]

    failures.clear()
    await insert_job(db, queue="race")
    inside = await connect(autocommit=False)
    with pytest.raises(psycopg.errors.SerializationFailure):
        await door_claim_ids(inside)
    await inside.rollback()
    assert failures == [1]


async def test_a_repeatable_read_claim_whose_snapshot_saw_a_moved_row_fails_with_40001(db, connect):
    """Deterministic: A's snapshot is taken, B claims and completes the job, A
    claims. READ COMMITTED would run the statement again; A's snapshot would
    fail again, so A gets the serialization failure (retry the transaction)."""
    job_id = await insert_job(db, queue="rr")
    reader = await connect()
    await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert await scalar(reader, "SELECT count(*) FROM sluice.jobs WHERE queue = 'rr'") == 1
    await claim(db, job_id)
    assert await complete(db, job_id)
    with pytest.raises(psycopg.errors.SerializationFailure):
        await asyncio.wait_for(
            reader.execute("SELECT * FROM sluice.job_claim('w', '{rr}', 1, '1 minute')"), 30
        )
    await reader.rollback()
    assert (
        await scalar(reader, "SELECT count(*) FROM sluice.job_claim('w', '{rr}', 1, '1 minute')")
        == 0
    )


async def test_maintenance_makes_partitions_ahead_and_retires_old_ones(db, pool):
    """The pruner's pass (worker maintenance): partitions for the days ahead,
    then every partition past SLUICE_RETENTION dropped, one per transaction."""
    olds = [await old_partition(db, day) for day in ("2020-01-01", "2020-01-02")]
    done = await make_job(db, "succeeded")
    await age(db, [done], "2020-01-02")
    await Pruner(pool, interval=60, retention=7 * 86400, worker_retention=86400).tick()
    assert [await scalar(db, "SELECT to_regclass(%s)", old) for old in olds] == [None, None]
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE id = %s", done) == 0
    ahead = await scalar(
        db, "SELECT count(*) FROM sluice.history_partitions WHERE lower_bound > now()"
    )
    assert ahead >= 7
