"""The engine's hot paths as rewritten for speed (see bench/README.md): they must
keep doing what they did. The claim bound, the update trigger at scale, the
attempt log without a foreign key, and the claim's asynchronous commit."""

from __future__ import annotations

import datetime as dt
import json
import re

import msgspec
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from sluice.core import protocol
from tests.engine import dataflow
from tests.engine.notifications import drain, listen, wait_on
from tests.factories import claim, complete, fail, fetch_job, insert_job, scalar
from tests.factories import rows as dict_rows

LEASE = dt.timedelta(seconds=30)


async def claim_after(db, after=None, limit=10, queues=("default",)):
    """The worker's claim query, optionally starting past `after` (priority, run_at, id)."""
    jobs = await protocol.job_claim(
        db,
        worker_id="w1",
        queues=list(queues),
        limit=limit,
        lease=LEASE,
        after_priority=after[0] if after else None,
        after_run_at=after[1] if after else None,
        after_id=after[2] if after else None,
    )
    return [msgspec.structs.asdict(job) for job in jobs]


def key(row):
    return (row["priority"], row["run_at"], row["id"])


async def test_a_bounded_claim_starts_past_its_bound_and_an_unbounded_one_at_the_head(db):
    ids = [await insert_job(db) for _ in range(4)]
    first = await claim_after(db, limit=2)
    assert [r["id"] for r in first] == ids[:2]
    urgent = await insert_job(db, priority=-5)  # behind the bound: a lower priority value
    bounded = await claim_after(db, after=max(key(r) for r in first), limit=1)
    assert [r["id"] for r in bounded] == [ids[2]]
    assert [r["id"] for r in await claim_after(db, limit=10)] == [urgent, ids[3]]


async def test_the_bound_does_not_apply_to_paused_limited_several_or_every_queue(db):
    ids = [await insert_job(db, queue="q1") for _ in range(3)]
    await db.execute("SELECT sluice.queue_set_concurrency('q1', 10)")
    past_all = (0, dt.datetime.now(dt.UTC) + dt.timedelta(days=1), 10**12)
    rows = await claim_after(db, after=past_all, queues=("q1",))
    assert sorted(r["id"] for r in rows) == ids
    other = await insert_job(db, queue="q2")
    rows = await claim_after(db, after=past_all, queues=("q2", "q3"))
    assert [r["id"] for r in rows] == [other]
    # '*' finds one queue with ready jobs and claims it by the fast path, unbounded.
    every = await insert_job(db, queue="q4")
    rows = await claim_after(db, after=past_all, queues=("*",))
    assert [r["id"] for r in rows] == [every]


async def test_a_claim_commits_asynchronously_without_changing_the_session(db):
    await db.execute("SET synchronous_commit = on")  # the test server runs with it off
    await insert_job(db)
    assert len(await claim_after(db)) == 1
    cur = await db.execute("SHOW synchronous_commit")
    assert (await cur.fetchone())[0] == "on"


async def test_one_statement_releasing_thousands_of_children_releases_them_all(db, connect):
    """jobs_after_update used to join its transition tables with a nested loop:
    quadratic in the rows one statement changed."""
    children = 3000
    nodes = [{"id": "root", "task": "noop"}] + [
        {"id": f"c{i}", "task": "noop", "depends_on": ["root"]} for i in range(children)
    ]
    cur = await db.execute(
        "SELECT sluice.dag_run_create('default', jsonb_build_object('nodes', %s::jsonb))",
        (json.dumps(nodes),),
    )
    run_id = (await cur.fetchone())[0]
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "default")
    root = (await (await db.execute(
        "SELECT id FROM sluice.jobs WHERE run_id = %s AND node = 'root'", (run_id,)
    )).fetchone())[0]  # fmt: skip
    await claim(db, root)
    assert await complete(db, root)
    cur = await db.execute(
        "SELECT state::text, count(*) FROM sluice.jobs WHERE run_id = %s GROUP BY 1 ORDER BY 1",
        (run_id,),
    )
    assert await cur.fetchall() == [("ready", children), ("succeeded", 1)]
    assert await drain(listener, db, "sluice_jobs") == ["default"]


async def test_deleting_jobs_deletes_their_attempt_log(db):
    kept, pruned = await insert_job(db), await insert_job(db)
    for job_id in (kept, pruned):
        await claim(db, job_id)
        assert await complete(db, job_id)
    await db.execute("DELETE FROM sluice.jobs WHERE id = %s", (pruned,))
    cur = await db.execute("SELECT job_id FROM sluice.job_attempts ORDER BY job_id")
    assert await cur.fetchall() == [(kept,)]


async def test_deleting_a_run_deletes_its_jobs_attempt_log(db):
    cur = await db.execute(
        'SELECT sluice.dag_run_create(\'default\', \'{"nodes": [{"id": "a", "task": "noop"}]}\')'
    )
    run_id = (await cur.fetchone())[0]
    async with db.cursor(row_factory=dict_row) as c:
        await c.execute("SELECT id FROM sluice.jobs WHERE run_id = %s", (run_id,))
        job_id = (await c.fetchone())["id"]
    await claim(db, job_id)
    assert await complete(db, job_id)
    assert (await fetch_job(db, job_id))["state"] == "succeeded"
    await db.execute("DELETE FROM sluice.dag_runs WHERE id = %s", (run_id,))
    cur = await db.execute("SELECT count(*) FROM sluice.job_attempts")
    assert (await cur.fetchone())[0] == 0


async def _seq_scans_of_jobs(db) -> int:
    """Sequential scans of sluice.jobs by this transaction so far: of its live
    partition, where the jobs are here (the empty history partitions are read
    by a sequential scan of no page, as the planner rightly prefers)."""
    cur = await db.execute(
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'sluice.jobs_live'::regclass"
    )
    return (await cur.fetchone())[0]


@pytest.mark.parametrize("flow", [{}, {"trigger": "all_done"}], ids=["plain", "data flow"])
async def test_releasing_children_and_reading_their_inputs_never_scan_the_jobs_table(db, flow):
    """Statistics taken while no job was blocked (a fresh database, or most jobs
    finished) once made the release a scan of every job per completion batch
    (the UPDATE's state filter looked like it kept no row): a 10,000-node fan-out
    ran 4.6 times slower. The release must find its children by id."""
    await db.execute(
        "INSERT INTO sluice.jobs (task, payload, queue)"
        " SELECT 'other', '{}', 'elsewhere' FROM generate_series(1, 20000)"
    )
    await db.execute("ANALYZE sluice.jobs")
    await db.execute(
        "SELECT sluice.dag_run_create('default', %s, '{}')",
        (
            json.dumps(
                {
                    "nodes": [{"id": "root", "task": "t"}]
                    + [
                        {"id": f"n{i}", "task": "t", "depends_on": ["root"]} | flow
                        for i in range(2000)
                    ]
                }
            ),
        ),
    )
    cur = await db.execute("SELECT id FROM sluice.jobs WHERE node = 'root'")
    (root,) = await cur.fetchone()
    await claim(db, root)
    async with db.transaction():
        before = await _seq_scans_of_jobs(db)
        assert await complete(db, root)
        assert await _seq_scans_of_jobs(db) == before
    cur = await db.execute("SELECT count(*) FROM sluice.jobs WHERE state = 'ready' AND task = 't'")
    assert (await cur.fetchone())[0] == 2000
    cur = await db.execute("SELECT id FROM sluice.jobs WHERE node = 'n7'")
    (child,) = await cur.fetchone()
    async with db.transaction():
        before = await _seq_scans_of_jobs(db)
        cur = await db.execute("SELECT sluice.job_parent_results(%s)", (child,))
        assert (await cur.fetchone())[0] == {"root": None}
        assert await _seq_scans_of_jobs(db) == before


async def test_a_fresh_sessions_first_completions_find_their_jobs_by_id(db, connect):
    """A worker's first completions in a session used to get custom plans, costed
    by statistics taken while no job ran (`worker_id = ...` looked like one row):
    below some 25,000 live jobs that was a scan of the live partition nested
    with the batch, 256 x 256 comparisons, 30-120 ms a batch, most of
    PostgreSQL's CPU in a drain of 20,000 jobs. Each batch must find its jobs
    by id, from the session's first call on."""
    await db.execute("INSERT INTO sluice.jobs (task) SELECT 'noop' FROM generate_series(1, 20000)")
    await db.execute("ANALYZE sluice.jobs")
    cur = await db.execute(
        "SELECT id, attempt FROM sluice.job_claim('w1', '{default}', 512, '1 minute')"
    )
    claimed = await cur.fetchall()
    assert len(claimed) == 512
    worker = await connect(autocommit=True)
    for batch in (claimed[:256], claimed[256:]):
        async with worker.transaction():
            before = await _seq_scans_of_jobs(worker)
            cur = await worker.execute(
                "SELECT * FROM sluice.job_complete_many('w1', %s, %s, %s::jsonb[])",
                ([i for i, _ in batch], [a for _, a in batch], [None] * len(batch)),
            )
            assert sorted(r[0] for r in await cur.fetchall()) == sorted(i for i, _ in batch)
            assert await _seq_scans_of_jobs(worker) == before
    cur = await db.execute("SELECT count(*) FROM sluice.jobs WHERE state = 'succeeded'")
    assert (await cur.fetchone())[0] == 512


@pytest.mark.parametrize(
    ("function", "column", "bad", "constraint"),
    [
        ("flow_valid", "flow", {"trigger": "x"}, "flow_spec_valid"),
        ("notify_valid", "notify", {"webhook": {"url": "ftp://x"}}, "notify_spec_valid"),
    ],
)
async def test_a_plain_job_is_inserted_without_calling_plpgsql(
    db, function, column, bad, constraint
):
    """The flow_spec and notify_spec domains are checked for the null of a plain
    job too: their guard spares every plain insert a PL/pgSQL call (and a SQL
    notify_valid, inlined into the check, made every INSERT statement compile
    its whole expression). A value is still checked."""
    await db.execute("SET track_functions = 'pl'")
    calls = (
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
        " WHERE schemaname = 'sluice' AND funcname = %s"
    )
    async with db.transaction():
        await insert_job(db)
        await db.execute("INSERT INTO sluice.jobs (task) SELECT 'noop' FROM generate_series(1, 3)")
        assert await scalar(db, calls, function) == 0
        with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
            async with db.transaction():
                await insert_job(db, **{column: Jsonb(bad)})
        assert await scalar(db, calls, function) == 1


async def test_an_insert_wakes_a_waiter_from_its_own_trigger_alone(db, connect):
    """jobs_after_insert runs notify_ready's protocol itself, once per statement,
    without calling it: a second PL/pgSQL frame per INSERT was a third of the
    trigger's cost. The waiter is still woken, once per queue and statement."""
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "default")
    await db.execute("SET track_functions = 'pl'")
    calls = (
        "SELECT funcname, calls FROM pg_stat_xact_user_functions"
        " WHERE schemaname = 'sluice' AND funcname IN ('jobs_after_insert', 'notify_ready')"
    )
    async with db.transaction():
        await insert_job(db)
        await db.execute("INSERT INTO sluice.jobs (task) SELECT 'noop' FROM generate_series(1, 3)")
        cur = await db.execute(calls)
        assert dict(await cur.fetchall()) == {"jobs_after_insert": 2}
    assert await drain(listener, db, "sluice_jobs") == ["default"]


async def _count_plans(db) -> None:
    """Count every statement's calls and plans, nested ones too, from now on.
    Autovacuum is off for Sluice's tables meanwhile: its ANALYZE invalidates the
    plans kept of the statements that read the table, and each is planned
    again (two such in a test's eight rounds failed it)."""
    await db.execute("""
        DO $$
        DECLARE t regclass;
        BEGIN
            FOR t IN SELECT c.oid FROM pg_class c
                      WHERE c.relnamespace = 'sluice'::regnamespace AND c.relkind = 'r'
            LOOP
                EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = off)', t);
            END LOOP;
        END $$""")
    await db.execute("CREATE EXTENSION pg_stat_statements")
    await db.execute("SET pg_stat_statements.track = 'all'")
    await db.execute("SET pg_stat_statements.track_planning = on")
    await db.execute("SELECT pg_stat_statements_reset()")


async def _nested_statements(db, calls: int) -> list[dict]:
    """The statements run inside functions at least `calls` times, with their plans."""
    return await dict_rows(
        db,
        "SELECT query, calls, plans FROM pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        "   AND NOT toplevel AND calls >= %s",
        calls,
    )


async def test_statements_that_read_every_partition_are_planned_once_per_session(db):
    """A statement that finds jobs by id, not by the partition key, reads every
    day of history too, and planning it takes milliseconds. PL/pgSQL planned
    such statements again at every call (the release of one child: five of
    them), so the functions that run them keep one generic plan (31_dag.sql,
    "Plans"). Counted by pg_stat_statements over DAG releases, data-flow runs,
    cancels and retries, after the warm-up of five custom plans."""
    await _count_plans(db)
    rounds = 8
    for _ in range(rounds):
        parent, child = await insert_job(db), await insert_job(db, queue="later")
        await db.execute(
            "INSERT INTO sluice.job_edges (parent_id, child_id) VALUES (%s, %s)", (parent, child)
        )
        await claim(db, parent)
        assert await complete(db, parent)
        run_id, ids = await dataflow.start(
            db,
            [
                dataflow.node("split"),
                dataflow.node("each", ["split"], map="{{ nodes.split.result }}"),
                dataflow.node("maybe", ["each"], when="$.nodes.each.result.size() > 0"),
            ],
        )
        await dataflow.finish(db, ids["split"], ["a", "b"])
        for element in await _elements(db, ids["each"]):
            await dataflow.finish(db, element, {"n": 1})
        assert (await dataflow.states(db, run_id))["maybe"] == "ready"
        assert await scalar(db, "SELECT sluice.cancel_job(%s)", ids["maybe"])
        assert await scalar(db, "SELECT count(*) FROM sluice.job_retry(%s)", [ids["maybe"]]) == 1
    stats = await _nested_statements(db, rounds)
    spanning = [
        s
        for s in stats
        if re.search(r"sluice\.(jobs|node_results|job_links)\b", s["query"])
        and "archived_at IS NULL" not in s["query"]
    ]
    assert len(spanning) >= 5, stats  # the release, the propagation, cancel and retry ran
    # Planned at every call; a plan kept after PL/pgSQL's five custom ones is fine.
    replanned = [
        (s["query"][:100], s["calls"], s["plans"]) for s in spanning if s["plans"] >= s["calls"]
    ]
    assert replanned == []


async def _elements(db, mapped: int) -> list[int]:
    found = await dict_rows(
        db, "SELECT id FROM sluice.jobs WHERE group_id = %s ORDER BY map_index", mapped
    )
    return [r["id"] for r in found]


async def test_a_completed_batch_keeps_each_result_and_output_whatever_the_others_hold(db):
    """job_complete_many's door sends ids and attempts as array literals, and a
    batch without results (or outputs) as a null array: each job must still get
    its own result and attempt log row, and the others none."""
    ids = [await insert_job(db) for _ in range(5)]
    jobs = await protocol.job_claim(db, worker_id="w1", queues=["default"], limit=5, lease=LEASE)
    by_id = {job.id: job for job in jobs}
    plain = [protocol.Succeeded(by_id[i], None) for i in ids[:2]]
    assert sorted(await protocol.job_complete_many(db, worker_id="w1", outcomes=plain)) == ids[:2]
    mixed = [
        protocol.Succeeded(by_id[ids[2]], '{"n": 2}'),
        protocol.Succeeded(by_id[ids[3]], None, "printed\n"),
        protocol.Succeeded(by_id[ids[4]], None),
    ]
    assert sorted(await protocol.job_complete_many(db, worker_id="w1", outcomes=mixed)) == ids[2:]
    found = await dict_rows(
        db, "SELECT id, state::text, result FROM sluice.jobs WHERE id = ANY(%s)", ids
    )
    assert {r["id"]: (r["state"], r["result"]) for r in found} == {
        ids[0]: ("succeeded", None),
        ids[1]: ("succeeded", None),
        ids[2]: ("succeeded", {"n": 2}),
        ids[3]: ("succeeded", None),
        ids[4]: ("succeeded", None),
    }
    logged = await dict_rows(db, "SELECT job_id, output FROM sluice.job_attempt_log")
    assert [(r["job_id"], r["output"]) for r in logged] == [(ids[3], "printed\n")]
    # Another worker's late completion of the same attempts changes nothing.
    again = [protocol.Succeeded(by_id[i], None) for i in ids]
    assert await protocol.job_complete_many(db, worker_id="w2", outcomes=again) == []


async def test_failures_and_retries_keep_their_plans(db):
    """sluice.job_fail_rows and sluice.job_retry_round were SQL functions that
    cannot be inlined: their statement was planned again at every call (a batch
    of failures, a retry). As PL/pgSQL they keep a plan for the session.
    Counted by pg_stat_statements over failures and retries, after the warm-up
    of five custom plans."""
    await _count_plans(db)
    rounds = 8
    for _ in range(rounds):
        job_id = await insert_job(db, max_attempts=1)
        await claim(db, job_id)
        assert (await fail(db, job_id, retryable=False))["state"] == "failed"
        assert await scalar(db, "SELECT count(*) FROM sluice.job_retry(%s)", [job_id]) == 1
    stats = await _nested_statements(db, rounds)
    found = {
        name: [(s["calls"], s["plans"]) for s in stats if marker in s["query"]]
        for name, marker in [
            ("job_fail_rows", "INSERT INTO sluice.dead_letters"),
            ("job_retry_round", "FROM round r"),
        ]
    }
    assert all(found.values()), stats
    assert {name: [c for c in counts if c[1] >= c[0]] for name, counts in found.items()} == {
        "job_fail_rows": [],
        "job_retry_round": [],
    }
