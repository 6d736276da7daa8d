"""Claiming: order, paused queues, concurrency limits, exactly-once under
concurrency, the wildcard queue '*', and the index the claim uses."""

import asyncio
import datetime as dt
import json
import re

import psycopg
import pytest
from psycopg.rows import dict_row

from sluice.core import protocol
from tests.engine.test_dag import create_run
from tests.engine.test_races import together, waits_on_a_lock
from tests.factories import claim as claim_job
from tests.factories import complete, fetch_job, insert_job, scalar

ROUNDS = 100


async def claim(conn, worker="w1", queues=("default",), limit=10, lease="30 seconds"):
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM sluice.job_claim(%s, %s, %s, %s::interval)",
            (worker, list(queues), limit, lease),
        )
        return await cur.fetchall()


async def test_claim_takes_lowest_priority_value_then_oldest(db):
    low = await insert_job(db, priority=5)
    first = await insert_job(db, priority=0)
    second = await insert_job(db, priority=0)
    urgent = await insert_job(db, priority=-10)
    claimed = await claim(db, limit=10)
    assert [job["id"] for job in claimed] == [urgent, first, second, low]


async def test_claim_writes_the_lease_and_counts_the_attempt(db):
    job_id = await insert_job(db)
    [row] = await claim(db, worker="w7", lease="42 seconds")
    assert row["attempt"] == 1
    job = await fetch_job(db, job_id)
    assert job["state"] == "running"
    assert job["worker_id"] == "w7"
    assert job["started_at"] is not None
    cur = await db.execute(
        "SELECT worker_id, attempt, expires_at - claimed_at FROM sluice.leases WHERE job_id = %s",
        (job_id,),
    )
    worker, attempt, ttl = await cur.fetchone()
    # The lease counts from the claim's transaction, its start from the claim itself.
    assert (worker, attempt) == ("w7", 1) and 41 < ttl.total_seconds() <= 42


async def test_claim_returns_what_the_worker_needs(db):
    job_id = await insert_job(db, task="send", payload={"to": "x"}, timeout="5 seconds")
    [row] = await claim(db)
    assert row["id"] == job_id
    assert row["task"] == "send"
    assert row["payload"] == {"to": "x"}
    assert row["timeout"].total_seconds() == 5


async def test_claim_respects_limit_and_queues(db):
    for _ in range(5):
        await insert_job(db, queue="a")
    other = await insert_job(db, queue="b")
    assert len(await claim(db, queues=["a"], limit=3)) == 3
    assert [job["id"] for job in await claim(db, queues=["b", "c"], limit=3)] == [other]
    assert len(await claim(db, queues=["a"], limit=0)) == 0


async def test_claim_ignores_scheduled_and_blocked_jobs(db):
    await insert_job(db, run_at="2999-01-01")
    parent = await insert_job(db, queue="elsewhere")
    child = await insert_job(db)
    await db.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (parent, child))
    assert await claim(db) == []


async def test_paused_queue_is_skipped_until_resumed(db):
    job_id = await insert_job(db, queue="reports")
    await db.execute("SELECT sluice.pause_queue('reports')")
    assert await claim(db, queues=["reports"]) == []
    await db.execute("SELECT sluice.resume_queue('reports')")
    assert [job["id"] for job in await claim(db, queues=["reports"])] == [job_id]


async def test_multi_queue_claim_orders_across_queues(db):
    a = await insert_job(db, queue="a", priority=1)
    b = await insert_job(db, queue="b", priority=0)
    claimed = await claim(db, queues=["a", "b"], limit=1)
    assert [job["id"] for job in claimed] == [b]
    assert [job["id"] for job in await claim(db, queues=["a", "b"], limit=5)] == [a]


async def test_concurrency_limit_caps_running_jobs_across_claimers(db, connect):
    await db.execute("SELECT sluice.queue_set_concurrency('limited', 3)")
    for _ in range(20):
        await insert_job(db, queue="limited")
    claimers = [await connect() for _ in range(6)]
    results = await asyncio.gather(
        *(claim(c, worker=f"w{i}", queues=["limited"], limit=5) for i, c in enumerate(claimers))
    )
    assert sum(len(r) for r in results) == 3
    cur = await db.execute("SELECT count(*) FROM sluice.jobs WHERE state = 'running'")
    assert await cur.fetchone() == (3,)
    # Finishing one frees exactly one slot.
    worker, job = next((f"w{i}", r[0]) for i, r in enumerate(results) if r)
    cur = await db.execute(
        "SELECT sluice.job_complete_many(%s, %s, %s, %s::jsonb[])",
        (worker, [job["id"]], [job["attempt"]], [None]),
    )
    assert await cur.fetchall() == [(job["id"],)]
    assert len(await claim(db, queues=["limited"], limit=5)) == 1


async def test_a_wildcard_claim_takes_every_queue_in_priority_order(db):
    a = await insert_job(db, queue="a", priority=1)
    b = await insert_job(db, queue="b", priority=0)
    never_named = await insert_job(db, queue="z.never-named", priority=2)
    await insert_job(db, queue="later", run_at="2999-01-01")  # scheduled: not ready
    # The lowest priority values across queues (the claim's rows come back unordered).
    assert {job["id"] for job in await claim(db, queues=["*"], limit=2)} == {a, b}
    assert [job["id"] for job in await claim(db, queues=["*"], limit=5)] == [never_named]
    assert await claim(db, queues=["*"]) == []


async def test_a_wildcard_claim_skips_paused_queues_and_tasks_it_cannot_run(db):
    held = await insert_job(db, queue="reports")
    await db.execute("SELECT sluice.pause_queue('reports')")
    other = await insert_job(db, queue="mail", task="other")
    mine = await insert_job(db, queue="mail", task="send")
    claimed = await scalar(
        db,
        "SELECT array_agg(id) FROM sluice.job_claim('w', '{*}', 10, '1 minute',"
        " p_tasks => '{send}')",
    )
    assert claimed == [mine]
    await db.execute("SELECT sluice.resume_queue('reports')")
    assert sorted(job["id"] for job in await claim(db, queues=["*", "mail"])) == [held, other]


async def test_a_wildcard_claim_honours_concurrency_limits(db):
    await db.execute("SELECT sluice.queue_set_concurrency('limited', 2)")
    limited = [await insert_job(db, queue="limited", priority=-1) for _ in range(4)]
    free = [await insert_job(db, queue="free") for _ in range(3)]
    claimed = {job["id"] for job in await claim(db, queues=["*"], limit=10)}
    assert claimed == {*limited[:2], *free}
    assert await claim(db, queues=["*"]) == []


@pytest.mark.parametrize("other", [["*"], ["limited"], ["limited", "free"]])
async def test_wildcard_claimers_racing_never_exceed_a_concurrency_limit(db, connect, other):
    """Rounds of a wildcard claimer and another one (wildcard or named) released
    together: together they take exactly the limit, never more."""
    first, second = await connect(), await connect()
    await db.execute("SELECT sluice.queue_set_concurrency('limited', 2)")
    # Another limited queue with ready jobs: a wildcard claim locks both, in name order.
    await db.execute("SELECT sluice.queue_set_concurrency('roomy', 50)")
    over = []
    for n in range(ROUNDS):
        await db.execute(
            "INSERT INTO sluice.jobs (task, queue) SELECT 'noop', q"
            " FROM unnest('{limited,limited,limited,limited,limited,free,roomy}'::text[]) q"
        )
        await together(claim(first, "w1", ["*"], 3), claim(second, "w2", other, 3))
        running = await scalar(
            db, "SELECT count(*) FROM sluice.jobs WHERE queue = 'limited' AND state = 'running'"
        )
        if running != 2:
            over.append((n, running))
        # Free the slots for the next round.
        await db.execute(
            "UPDATE sluice.jobs SET state = 'cancelled', finished_at = now(), archived_at = now()"
            " WHERE state IN ('running', 'ready')"
        )
    assert over == []


async def test_a_wildcard_claim_waits_for_an_open_limited_claim_then_sees_it(db, connect):
    """The interleaving the queue row lock exists for, held open: a limited
    queue's slots taken by an uncommitted claim are not handed out twice."""
    holder, observer = await connect(), await connect()
    await db.execute("SELECT sluice.queue_set_concurrency('limited', 2)")
    limited = [await insert_job(db, queue="limited") for _ in range(3)]
    free = await insert_job(db, queue="free")
    await holder.execute("BEGIN")
    assert [job["id"] for job in await claim(holder, "w1", ["limited"], 5)] == limited[:2]
    pid = await scalar(db, "SELECT pg_backend_pid()")
    late = asyncio.create_task(claim(db, "w2", ["*"], 5))
    assert await waits_on_a_lock(observer, pid, late)
    await holder.execute("COMMIT")
    assert [job["id"] for job in await late] == [free]


async def test_a_wildcard_claim_never_scans_the_jobs_table(db):
    """The queues with ready jobs are found by a walk of jobs_ready, one entry per
    queue, not by reading the jobs: with stale statistics (taken on an empty
    table) and with fresh ones."""
    await db.execute("ANALYZE sluice.jobs")
    await db.execute("SELECT sluice.queue_set_concurrency('limited', 5)")
    await db.execute("SELECT sluice.pause_queue('paused')")
    await db.execute(
        "INSERT INTO sluice.jobs (task, queue, run_at)"
        " SELECT 'noop', (ARRAY['a', 'b', 'limited', 'paused'])[1 + i % 4],"
        "        CASE WHEN i % 3 = 0 THEN now() + interval '1 day' ELSE now() END"
        " FROM generate_series(1, 40000) i"
    )
    for analyzed in (False, True):
        if analyzed:
            await db.execute("ANALYZE sluice.jobs")
        async with db.transaction():
            before = await scalar(db, SEQ_SCANS)
            assert len(await claim(db, queues=["*"], limit=10)) == 10
            assert await scalar(db, SEQ_SCANS) == before


SEQ_SCANS = (
    "SELECT sum(seq_scan) FROM pg_stat_xact_user_tables"
    " WHERE relid IN (SELECT sluice.jobs_partitions())"
)


async def test_star_is_no_queue_name(db):
    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        await insert_job(db, queue="*")
    assert raised.value.diag.constraint_name == "queue_name_valid"


async def test_eight_concurrent_claimers_take_every_job_exactly_once(db, connect):
    await db.execute("INSERT INTO sluice.jobs (task) SELECT 'noop' FROM generate_series(1, 20000)")
    claimers = [await connect() for _ in range(8)]

    async def drain(conn, worker):
        taken = []
        while batch := await claim(conn, worker=worker, limit=50):
            taken.extend(job["id"] for job in batch)
        return taken

    results = await asyncio.gather(*(drain(c, f"w{i}") for i, c in enumerate(claimers)))
    every = [job_id for taken in results for job_id in taken]
    assert len(every) == 20000
    assert len(set(every)) == 20000
    assert sum(1 for taken in results if taken) > 1, "claims should have been spread over claimers"
    cur = await db.execute(
        "SELECT count(*) FILTER (WHERE state = 'running'), count(*) FROM sluice.jobs"
    )
    assert await cur.fetchone() == (20000, 20000)
    # Each job is leased to the claimer that returned it.
    for i, taken in enumerate(results):
        if taken:
            cur = await db.execute(
                "SELECT count(*) FROM sluice.jobs WHERE id = ANY(%s) AND worker_id = %s",
                (taken, f"w{i}"),
            )
            assert await cur.fetchone() == (len(taken),)


async def test_claim_uses_the_ready_index_and_touches_few_pages_in_a_big_table(db):
    """O(log n): with 200k ready and 200k scheduled jobs, claiming 10 reads a
    handful of pages through jobs_ready, never a scan of the table."""
    await db.execute(
        "INSERT INTO sluice.jobs (task, run_at) "
        "SELECT 'noop', CASE WHEN i % 2 = 0 THEN now() + interval '1 day' ELSE now() END "
        "FROM generate_series(1, 400000) i"
    )
    await db.execute("ANALYZE sluice.jobs")
    plans: list[str] = []
    db.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    # auto_explain reports the plans of the statements inside job_claim to us.
    for setting, value in [
        ("log_min_duration", "0"),
        ("log_nested_statements", "on"),
        ("log_analyze", "on"),
        ("log_buffers", "on"),
        ("log_format", "json"),
        ("log_level", "notice"),
    ]:
        await db.execute(f"SET auto_explain.{setting} = '{value}'")
    await db.execute("LOAD 'auto_explain'")
    claimed = await claim(db, limit=10)
    await db.execute("SET auto_explain.log_min_duration = -1")
    assert len(claimed) == 10

    update = next(p for p in plans if '"Operation": "Update"' in p and "job_claim" not in p)
    plan = json.loads(re.sub(r"^duration: [\d.]+ ms\s+plan:\s*", "", update))["Plan"]

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    scans = [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in nodes(plan)
        if "Scan" in n["Node Type"]
    ]
    assert ("Index Scan", "jobs_live", "jobs_ready") in scans
    assert not [s for s in scans if s[0] == "Seq Scan"], scans
    pages = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert pages < 300, f"claiming 10 jobs touched {pages} pages"


TRIGGER_CALLS = (
    "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
    " WHERE schemaname = 'sluice' AND funcname IN ('jobs_after_update', 'jobs_wake_waiters')"
)


@pytest.mark.parametrize("door", ["job_claim", "worker"])
async def test_a_claim_updates_the_live_partition_and_needs_no_trigger_of_the_jobs_table(db, door):
    """The claim updates sluice.jobs_live by name (job_claim_once): the statement
    triggers of sluice.jobs do not run for it, and nothing a claim must do
    depended on them. A DAG node claimed gets its parent's result, its run stays
    running, its child stays blocked, and a waiter on it keeps waiting."""
    await db.execute("SET track_functions = 'pl'")
    run_id, nodes = await create_run(db)
    await claim_job(db, nodes["a"])
    assert await complete(db, nodes["a"], {"rows": 3})
    await db.execute("INSERT INTO sluice.job_waiters (job_id) VALUES (%s)", (nodes["b"],))
    async with db.transaction():
        before = await scalar(db, TRIGGER_CALLS)
        if door == "worker":
            claimed = await protocol.job_claim(
                db, worker_id="w1", queues=["default"], limit=1, lease=dt.timedelta(minutes=1)
            )
            row = {"id": claimed[0].id, "parents": claimed[0].parents}
        else:
            [row] = await claim(db, limit=1)
        assert await scalar(db, TRIGGER_CALLS) == before
    assert row["id"] in (nodes["b"], nodes["c"])
    assert row["parents"] == {"a": {"rows": 3}}
    assert (await fetch_job(db, row["id"]))["state"] == "running"
    assert (await fetch_job(db, nodes["d"]))["state"] == "blocked"
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run_id)
        == "running"
    )
    assert await scalar(db, "SELECT count(*) FROM sluice.job_waiters") == 1
