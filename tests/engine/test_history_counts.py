"""sluice.queue_stats reads the closed history partitions from their counts
(sql/schema/47_history_counts.sql), and gives the same answer as a count over
sluice.jobs, whatever revives, deletes, moves or retires rows meanwhile."""

from __future__ import annotations

import contextlib
import datetime as dt
import random

import psycopg
import pytest

from sluice.worker.pruner import Pruner
from tests.engine.test_history import age, old_partition
from tests.engine.test_races import together
from tests.factories import WORKER, make_job, rows, scalar

FINISHED = ("succeeded", "failed", "cancelled", "skipped")

# What queue_stats answered before the rollup: every row of sluice.jobs counted.
DIRECT = """
SELECT coalesce(c.queue, q.name)::text AS queue,
       coalesce(c.blocked, 0) AS blocked, coalesce(c.scheduled, 0) AS scheduled,
       coalesce(c.ready, 0) AS ready, coalesce(c.running, 0) AS running,
       coalesce(c.waiting, 0) AS waiting, coalesce(c.succeeded, 0) AS succeeded,
       coalesce(c.failed, 0) AS failed, coalesce(c.cancelled, 0) AS cancelled,
       coalesce(c.skipped, 0) AS skipped
  FROM (SELECT j.queue,
               count(*) FILTER (WHERE j.state = 'blocked') AS blocked,
               count(*) FILTER (WHERE j.state = 'scheduled') AS scheduled,
               count(*) FILTER (WHERE j.state = 'ready') AS ready,
               count(*) FILTER (WHERE j.state = 'running') AS running,
               count(*) FILTER (WHERE j.state = 'waiting') AS waiting,
               count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE j.state = 'failed') AS failed,
               count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE j.state = 'skipped') AS skipped
          FROM sluice.jobs j GROUP BY j.queue) c
  FULL JOIN sluice.queues q ON q.name = c.queue
 ORDER BY 1"""
STATS = """
SELECT queue::text, blocked, scheduled, ready, running, waiting, succeeded, failed,
       cancelled, skipped
  FROM sluice.queue_stats ORDER BY 1"""


async def some(db, partition: str, n: int, *, revivable: bool = False) -> list[int]:
    """Ids of `n` jobs in `partition` (cancelled or failed ones: revivable)."""
    found = await rows(
        db,
        "SELECT id FROM sluice.jobs WHERE tableoid = %s::regclass"
        " AND (NOT %s OR state IN ('cancelled', 'failed')) ORDER BY id LIMIT %s",
        partition,
        revivable,
        n,
    )
    return [r["id"] for r in found]


# Reads of the closed partitions by this backend in this transaction.
CLOSED_SCANS = """
SELECT coalesce(sum(s.seq_scan + coalesce(s.idx_scan, 0)), 0)
  FROM pg_stat_xact_user_tables s
  JOIN sluice.history_closed c ON c.partition = s.relid"""

# Closed partitions this backend has locked (planning a read of one locks it).
CLOSED_LOCKED = """
SELECT count(*) FROM pg_locks l
 WHERE l.pid = pg_backend_pid()
   AND l.relation IN (SELECT c.partition FROM sluice.history_closed c)"""

DAYS = ("2020-01-01", "2020-01-02", "2020-01-03")

# Rollup rows of partitions no longer attached.
ORPHANS = """
WITH attached AS (SELECT p.partition FROM sluice.history_partitions p)
SELECT (SELECT count(*) FROM sluice.history_counts h WHERE h.partition NOT IN (TABLE attached))
     + (SELECT count(*) FROM sluice.history_closed c WHERE c.partition NOT IN (TABLE attached))"""

RACE_ROUNDS = 80


async def finished_jobs(db, day: str, n: int, queues=("a", "b", "c")) -> None:
    """`n` finished jobs archived on `day`, in several queues and states."""
    await db.execute(
        "INSERT INTO sluice.jobs"
        " (task, queue, state, attempt, started_at, finished_at, archived_at)"
        " SELECT 'noop', (%s::text[])[1 + i %% cardinality(%s::text[])],"
        "        (%s::sluice.job_state[])[1 + i %% 4], 1, t, t, t"
        "   FROM generate_series(1, %s) i,"
        "        LATERAL (SELECT %s::timestamptz + interval '1 hour'"
        "                        + i * interval '1 second') d(t)",
        (list(queues), list(queues), list(FINISHED), n, f"{day} 00:00:00+00"),
    )


async def close(db) -> int:
    """The maintenance pass's rollup steps, to the end; how many partitions it closed."""
    await db.execute("SELECT sluice.history_rollup_watch()")
    closed = 0
    while await scalar(db, "SELECT sluice.history_rollup(1)"):
        closed += 1
    return closed


async def assert_exact(db) -> None:
    """queue_stats answers what a count over every row answers, without reading
    a closed partition, nor even planning a read of one (it would lock it)."""
    async with db.transaction():
        before = await scalar(db, CLOSED_SCANS)
        stats = await rows(db, STATS)
        assert await scalar(db, CLOSED_SCANS) == before, "queue_stats read a closed partition"
        assert await scalar(db, CLOSED_LOCKED) == 0, "queue_stats planned a closed partition"
        assert stats == await rows(db, DIRECT)


async def test_queue_stats_reads_no_closed_partition_and_counts_the_same(db):
    for day in DAYS:
        await old_partition(db, day)
        await finished_jobs(db, day, 200)
    await make_job(db, "succeeded", queue="a")  # today's, counted directly
    await make_job(db, "ready", queue="d")
    assert await close(db) == 3
    assert await scalar(db, "SELECT count(*) FROM sluice.history_closed") == 3
    await assert_exact(db)


async def test_completions_write_no_count_and_open_partitions_are_counted_directly(db):
    await old_partition(db, DAYS[0])
    await finished_jobs(db, DAYS[0], 50)
    assert await close(db) == 1
    counts = "SELECT count(*) FROM sluice.history_counts"
    before = await scalar(db, counts)
    for _ in range(5):
        await make_job(db, "succeeded", queue="a")
        await make_job(db, "cancelled", queue="b")
    assert await scalar(db, counts) == before, "the per-job path wrote to the rollup"
    await assert_exact(db)


async def test_revivals_deletions_moves_and_retirement_keep_the_counts_exact(db):
    for day in DAYS:
        await old_partition(db, day)
        await finished_jobs(db, day, 40)
    assert await close(db) == 3
    revivable = await some(db, "sluice.jobs_h20200101", 3, revivable=True)
    # job_retry brings cancelled jobs back to the live partition.
    assert len(await rows(db, "SELECT sluice.job_retry(%s)", revivable)) == 3
    await assert_exact(db)
    # job_prune's way: rows deleted one by one.
    await db.execute(
        "DELETE FROM sluice.jobs WHERE id = ANY(%s)", (await some(db, "sluice.jobs_h20200102", 5),)
    )
    await assert_exact(db)
    # An update in place that moves a row to another queue, or changes nothing counted.
    await db.execute(
        "UPDATE sluice.jobs SET queue = 'moved' WHERE id = ANY(%s)",
        (await some(db, "sluice.jobs_h20200103", 4),),
    )
    await db.execute("UPDATE sluice.jobs SET priority = 7 WHERE archived_at < '2020-01-04'")
    await assert_exact(db)
    # A completion begun before midnight archives into a closed day.
    late = await make_job(db, "succeeded", queue="late")
    await age(db, [late], DAYS[1])
    await assert_exact(db)
    # Folding the deltas changes nothing the view answers.
    deltas = await scalar(db, "SELECT count(*) FROM sluice.history_counts")
    await close(db)
    assert await scalar(db, "SELECT count(*) FROM sluice.history_counts") < deltas
    assert await scalar(db, "SELECT count(*) FROM sluice.history_counts WHERE n <= 0") == 0
    await assert_exact(db)
    # Retirement drops the oldest with its counts.
    assert await scalar(db, "SELECT sluice.history_retire('7 days')") == 1
    assert await scalar(db, "SELECT count(*) FROM sluice.history_closed") == 2
    await assert_exact(db)
    # TRUNCATE, as a reset does.
    await db.execute("TRUNCATE sluice.jobs CASCADE")
    assert await scalar(db, "SELECT count(*) FROM sluice.history_counts") == 0
    await assert_exact(db)


async def test_a_rerun_of_a_run_whose_jobs_are_in_a_closed_partition(db):
    definition = (
        '{"nodes": [{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": ["a"]}]}'
    )
    run_id = await scalar(db, "SELECT sluice.dag_run_create('default', %s)", definition)
    ids = [
        r["id"]
        for r in await rows(
            db, "SELECT id FROM sluice.jobs WHERE run_id = %s ORDER BY node", run_id
        )
    ]
    for job_id in ids:
        await db.execute(
            "SELECT * FROM sluice.job_claim(%s, '{default}', 1, '30 seconds')", (WORKER,)
        )
        await db.execute(
            "SELECT * FROM sluice.job_complete_many(%s, %s, '{1}', '{null}'::jsonb[])",
            (WORKER, [job_id]),
        )
    await old_partition(db, DAYS[0])
    await age(db, ids, DAYS[0])
    assert await close(db) == 1
    await assert_exact(db)
    assert await scalar(db, "SELECT sluice.rerun_from(%s, 'a')", run_id) == 2
    await assert_exact(db)


async def test_rows_moving_while_a_partition_is_watched_but_not_yet_counted(db, connect):
    """A revival committed between the watch and the count is in the count and
    its delta goes; one still open when the count runs keeps its delta and is
    seen with it."""
    await old_partition(db, DAYS[0])
    await finished_jobs(db, DAYS[0], 40)
    await db.execute("SELECT sluice.history_rollup_watch()")
    ids = await some(db, "sluice.jobs_h20200101", 4)
    await db.execute("DELETE FROM sluice.jobs WHERE id = %s", (ids[0],))
    other = await connect()
    await other.execute("BEGIN")
    await other.execute("DELETE FROM sluice.jobs WHERE id = %s", (ids[1],))
    assert await scalar(db, "SELECT sluice.history_rollup(1)") == 1
    await assert_exact(db)
    await other.commit()
    await assert_exact(db)


async def test_watching_gives_up_on_an_open_writer_and_catches_it_later(db, connect):
    """CREATE TRIGGER waits for the transactions writing to the partition (a
    completion begun before midnight): the watch gives up after its lock_timeout
    rather than hold revivals behind it, and counts it on a later pass."""
    await old_partition(db, DAYS[0])
    await finished_jobs(db, DAYS[0], 20)
    writer = await connect()
    await writer.execute("BEGIN")
    await writer.execute(
        "DELETE FROM sluice.jobs WHERE id = (SELECT min(id) FROM sluice.jobs_h20200101)"
    )
    with pytest.raises(psycopg.errors.LockNotAvailable):
        await db.execute("SELECT sluice.history_rollup_watch()")
    await writer.commit()
    assert await close(db) == 1
    await assert_exact(db)


@pytest.mark.slow
async def test_revivals_and_retirement_racing_two_leaders_counting(db, connect):
    """Revivals and deletions released together with two maintenance leaders
    watching and counting the same partition, then its retirement racing a
    leader and a revival: each job is counted once, every round."""
    a, b, c = await connect(), await connect(), await connect()

    async def revive(conn, ids):
        await conn.execute("SELECT sluice.job_retry(%s)", (ids,))

    async def delete(conn, ids):
        await conn.execute("DELETE FROM sluice.jobs WHERE id = ANY(%s)", (ids,))

    async def lead(conn):
        # A leader that waits past lock_timeout gives up, as on a busy pass.
        for step in ("SELECT sluice.history_rollup_watch()", "SELECT sluice.history_rollup(5)"):
            with contextlib.suppress(psycopg.errors.LockNotAvailable):
                await conn.execute(step)

    async def retire(conn):
        with contextlib.suppress(psycopg.errors.LockNotAvailable):
            await conn.execute("SELECT sluice.history_retire('1 day', 10)")

    for round_ in range(RACE_ROUNDS):
        day = (dt.date(2019, 1, 1) + dt.timedelta(days=round_)).isoformat()
        name = await old_partition(db, day)
        await finished_jobs(db, day, 30)
        revivable = await some(db, name, 4, revivable=True)
        others = [i for i in await some(db, name, 10) if i not in revivable][:3]
        errors = await together(revive(a, revivable[:2]), lead(b), lead(c), delete(db, others))
        assert errors == [None] * 4
        await assert_exact(db)
        errors = await together(retire(a), lead(b), revive(c, revivable[2:]))
        assert errors == [None] * 3
        await assert_exact(db)
        for _ in range(50):
            if not await scalar(db, "SELECT to_regclass(%s) IS NOT NULL", name):
                break
            await retire(db)
        # Nothing is left of it in the rollup.
        assert await scalar(db, ORPHANS) == 0
        await assert_exact(db)


@pytest.mark.parametrize("seed", range(6))
async def test_random_sequences_of_history_operations_keep_queue_stats_exact(db, seed):
    rng = random.Random(seed)
    days = [f"2021-03-{d:02d}" for d in range(1, 6)]
    for day in days:
        await old_partition(db, day)
    for _ in range(40):
        op = rng.choice(
            ["add", "add", "close", "retry", "delete", "move", "late", "retire", "fold"]
        )
        day = rng.choice(days)
        name = "jobs_h" + day.replace("-", "")
        exists = await scalar(db, "SELECT to_regclass(%s) IS NOT NULL", f"sluice.{name}")
        if op == "add" and exists:
            await finished_jobs(db, day, rng.randint(1, 30), queues=rng.sample("abcde", 2))
        elif op == "close":
            await db.execute("SELECT sluice.history_rollup_watch()")
            await db.execute("SELECT sluice.history_rollup(%s)", (rng.randint(1, 3),))
        elif op == "fold":
            await close(db)
        elif op in ("retry", "delete", "move") and exists:
            candidates = await some(db, f"sluice.{name}", 1000, revivable=True)
            picked = rng.sample(candidates, min(len(candidates), rng.randint(1, 4)))
            if op == "retry":
                await db.execute("SELECT sluice.job_retry(%s)", (picked,))
            elif op == "delete":
                await db.execute("DELETE FROM sluice.jobs WHERE id = ANY(%s)", (picked,))
            else:
                await db.execute(
                    "UPDATE sluice.jobs SET queue = %s WHERE id = ANY(%s)",
                    (rng.choice("xyz"), picked),
                )
        elif op == "late" and exists:
            job = await make_job(db, "succeeded", queue=rng.choice("abx"))
            await age(db, [job], day)
        elif op == "retire":
            # The oldest day goes, as retention would take it.
            await db.execute("SELECT sluice.history_retire(now() - '2021-03-02'::timestamptz)")
        await assert_exact(db)


async def test_maintenance_counts_the_days_past(db, pool):
    await old_partition(db, DAYS[0])
    await finished_jobs(db, DAYS[0], 30)
    await Pruner(pool, interval=60, retention=100 * 365 * 86400, worker_retention=86400).tick()
    assert await scalar(db, "SELECT count(*) FROM sluice.history_closed") == 1
    await assert_exact(db)


async def test_a_partition_detached_by_hand_is_forgotten(db):
    await old_partition(db, DAYS[0])
    await finished_jobs(db, DAYS[0], 30)
    await close(db)
    await db.execute("ALTER TABLE sluice.jobs_history DETACH PARTITION sluice.jobs_h20200101")
    await assert_exact(db)
    await close(db)
    assert await scalar(db, "SELECT count(*) FROM sluice.history_counts") == 0
    assert await scalar(db, "SELECT count(*) FROM sluice.history_closed") == 0
