"""Finished jobs read by time (sql/schema/13_jobs.sql, jobs_finished): history
partitions carry a BRIN on finished_at instead of a btree, the live partition a
btree over its failed jobs, and every reader bounds archived_at as well so that
older partitions are skipped. These tests split today's history at a boundary
inside the last hour, so the readers must gather rows from two history
partitions and the live one, and check that they still answer the same rows."""

from __future__ import annotations

import psycopg
import pytest

from sluice.core import engine
from tests.factories import make_job, rows, scalar

# Index access method and key columns of every index on a relation.
INDEXES = """
SELECT am.amname AS method, i.indexrelid::regclass::text AS name,
       array(SELECT a.attname::text FROM unnest(i.indkey) k
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k) AS columns
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am am ON am.oid = c.relam
 WHERE i.indrelid = %s::regclass"""


async def split_today(db, minutes_ago: int) -> tuple[str, str]:
    """Replace today's (empty) history partition by two, split `minutes_ago`
    minutes before now: (older, newer). The jobs these tests place reach two
    hours back: in a UTC day's first hours, into yesterday, which a database
    made today has no partition for, so the older one reaches three hours back
    whatever the time of day."""
    today = await rows(
        db,
        "SELECT p.name, least(p.lower_bound, now() - interval '3 hours') AS lower_bound,"
        " p.upper_bound FROM sluice.history_partitions p"
        " WHERE p.lower_bound <= now() AND p.upper_bound > now()",
    )
    split = await scalar(db, "SELECT now() - make_interval(mins => %s)", minutes_ago)
    await db.execute(f"DROP TABLE sluice.{today[0]['name']}")
    for name, low, high in [
        ("jobs_hearly", today[0]["lower_bound"], split),
        ("jobs_hlate", split, today[0]["upper_bound"]),
    ]:
        await db.execute("SELECT sluice.history_partition_create(%s, %s, %s)", (name, low, high))
    return "sluice.jobs_hearly", "sluice.jobs_hlate"


async def finished_ago(db, state: str, minutes: float, **columns) -> int:
    """A job ended `state` (by the engine), then moved to `minutes` ago: its
    finish and, for history, its archiving (a failed job stays live)."""
    job_id = await make_job(db, state, **columns)
    await db.execute(
        "UPDATE sluice.jobs SET finished_at = now() - make_interval(secs => %s * 60),"
        " started_at = now() - make_interval(secs => %s * 60 + 1),"
        " archived_at = CASE WHEN archived_at IS NULL THEN NULL"
        "                    ELSE now() - make_interval(secs => %s * 60) END"
        " WHERE id = %s",
        (minutes, minutes, minutes, job_id),
    )
    return job_id


async def where(db, job_id: int) -> str:
    return await scalar(
        db, "SELECT tableoid::regclass::text FROM sluice.jobs WHERE id = %s", job_id
    )


# -- the indexes ----------------------------------------------------------------------


async def test_history_partitions_index_finished_at_with_a_brin_not_a_btree(db):
    await db.execute("SELECT sluice.history_prepare()")
    partitions = await rows(db, "SELECT partition::text AS name FROM sluice.history_partitions")
    assert len(partitions) >= 9
    for p in partitions:
        indexes = await rows(db, INDEXES, p["name"])
        on_finished = [
            (i["method"], i["columns"]) for i in indexes if "finished_at" in i["columns"]
        ]
        assert on_finished == [("brin", ["finished_at"])], p["name"]
        options = await scalar(
            db, "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", f"{p['name']}_finished"
        )
        assert "autosummarize=on" in options
    # The live partition keeps a btree for the failed jobs in the dead-letter queue.
    live = await rows(db, INDEXES, "sluice.jobs_live")
    assert [(i["method"], i["name"]) for i in live if "finished_at" in i["columns"]] == [
        ("btree", "sluice.jobs_finished")
    ]


async def test_archived_at_is_never_before_finished_at(db):
    job_id = await make_job(db, "succeeded")
    with pytest.raises(psycopg.errors.CheckViolation, match="jobs_archived_after_finish"):
        await db.execute(
            "UPDATE sluice.jobs SET finished_at = archived_at + interval '1 second' WHERE id = %s",
            (job_id,),
        )
    # Earlier is fine (a job archived after it finished: a discarded dead letter).
    await db.execute(
        "UPDATE sluice.jobs SET finished_at = archived_at - interval '1 day' WHERE id = %s",
        (job_id,),
    )


async def test_a_discard_never_archives_a_job_before_it_failed(db):
    # The discard's transaction may have begun before the failure it sees committed:
    # its now() is then earlier than finished_at. Stand-in: a finish ahead of now().
    job_id = await make_job(db, "failed")
    await db.execute(
        "UPDATE sluice.jobs SET finished_at = now() + interval '1 minute' WHERE id = %s",
        (job_id,),
    )
    assert await scalar(db, "SELECT sluice.dead_letter_discard(%s)", job_id)
    job = (await rows(db, "SELECT * FROM sluice.jobs WHERE id = %s", job_id))[0]
    assert job["archived_at"] == job["finished_at"] and job["state"] == "failed"
    assert await where(db, job_id) != "sluice.jobs_live"


# -- the readers ----------------------------------------------------------------------


async def test_throughput_counts_jobs_finished_in_every_partition_of_the_hour(db):
    early, late = await split_today(db, 30)
    a = await finished_ago(db, "succeeded", 50, queue="mail")
    b = await finished_ago(db, "succeeded", 50.2, queue="mail")
    c = await finished_ago(db, "cancelled", 50, queue="default")
    d = await finished_ago(db, "succeeded", 10, queue="mail")
    e = await finished_ago(db, "failed", 10, queue="mail")  # live: its dead letter is open
    f = await finished_ago(db, "succeeded", 70, queue="mail")  # before the hour
    assert [await where(db, j) for j in (a, b, c, d, e, f)] == [
        early, early, early, late, "sluice.jobs_live", early
    ]  # fmt: skip
    # A job that failed two hours ago and was archived (its letter discarded) just
    # now finished outside the hour, though its partition is inside it.
    g = await finished_ago(db, "failed", 120, queue="mail")
    assert await scalar(db, "SELECT sluice.dead_letter_discard(%s)", g)
    assert await where(db, g) == late
    await db.execute("ANALYZE sluice.jobs")

    got = await rows(db, "SELECT * FROM sluice.throughput")
    expected = await rows(
        db,
        "SELECT date_trunc('minute', finished_at) AS minute, queue,"
        " count(*) FILTER (WHERE state = 'succeeded') AS succeeded,"
        " count(*) FILTER (WHERE state = 'failed') AS failed,"
        " count(*) FILTER (WHERE state = 'cancelled') AS cancelled,"
        " count(*) FILTER (WHERE state = 'skipped') AS skipped"
        " FROM sluice.jobs WHERE id = ANY(%s) GROUP BY 1, 2 ORDER BY 1 DESC, 2",
        [a, b, c, d, e],
    )
    assert got == expected
    assert sum(r["succeeded"] + r["failed"] + r["cancelled"] for r in got) == 5

    minutes = await engine.job_throughput(db, tenant=None, queue="mail", minutes=60)
    assert len(minutes) == 60
    assert sum(m.succeeded for m in minutes) == 3 and sum(m.failed for m in minutes) == 1
    assert sum(m.cancelled for m in minutes) == 0


async def test_throughput_reads_no_history_partition_older_than_the_hour(db):
    await split_today(db, 90)
    await finished_ago(db, "succeeded", 100)
    await finished_ago(db, "succeeded", 5)
    await db.execute("ANALYZE sluice.jobs")
    plan = "\n".join(
        r["QUERY PLAN"]
        for r in await rows(db, "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM sluice.throughput")
    )
    assert "jobs_hlate" in plan and "Subplans Removed" in plan
    assert "jobs_hearly" not in plan, plan
    assert [r["succeeded"] for r in await rows(db, "SELECT * FROM sluice.throughput")] == [1]


async def test_wait_time_sample_is_the_newest_finished_jobs_across_partitions(db):
    early, late = await split_today(db, 30)
    jobs = {
        minutes: await finished_ago(db, "succeeded", minutes)
        for minutes in (0.2, 0.5, 3, 10, 45, 50, 59)
    }
    failed = await finished_ago(db, "failed", 7)  # live
    ahead = await finished_ago(db, "succeeded", -1)  # a clock ahead: counted, first
    await finished_ago(db, "succeeded", 61)  # outside the minutes
    await make_job(db, "running")
    assert [await where(db, jobs[m]) for m in (0.2, 10, 45, 59)] == [late, late, early, early]

    async def sample(n: int, minutes: int = 60) -> list[int]:
        found = await rows(db, "SELECT id FROM sluice.job_wait_sample(%s, %s)", minutes, n)
        return [r["id"] for r in found]

    newest = [ahead, jobs[0.2], jobs[0.5], jobs[3], failed, jobs[10], jobs[45], jobs[50], jobs[59]]
    assert await sample(100) == newest
    for n in range(1, len(newest) + 1):
        assert await sample(n) == newest[:n], n  # each doubling window cut where it must be
    assert await sample(100, minutes=5) == newest[:4]
    assert await sample(0) == []

    waits = await engine.job_wait_times(db, tenant=None, queue=None, minutes=60, sample=3)
    assert waits[0].queue is None and waits[0].jobs == 3 + 1  # the sample, and the running job


async def test_job_list_pages_finished_jobs_newest_first_across_partitions(db):
    early, late = await split_today(db, 30)
    made = []
    for minutes in (50, 10, 40, 5, 45, 1):  # ids alternate between the two partitions
        made.append(await finished_ago(db, "succeeded", minutes))
    await make_job(db, "ready")
    assert {await where(db, j) for j in made} == {early, late}
    seen: list[int] = []
    before = None
    while True:
        page = await engine.job_list(
            db, where=engine.JobFilter(states=["succeeded"], before_id=before, limit=4)
        )
        seen += [j.id for j in page]
        if len(page) < 4:
            break
        before = page[-1].id
    assert seen == sorted(made, reverse=True)


async def test_pruning_finds_stragglers_behind_a_summarized_brin(db):
    # A job of a finished run kept past the retention lands in today's partition
    # with its old finished_at; the BRIN ranges are summarized as autovacuum would.
    old = await finished_ago(db, "succeeded", 0)
    await db.execute(
        "UPDATE sluice.jobs SET finished_at = now() - interval '30 days' WHERE id = %s", (old,)
    )
    recent = [await finished_ago(db, "succeeded", 0) for _ in range(3)]
    part = await where(db, old)
    await db.execute("SELECT brin_summarize_new_values(%s::regclass)", (f"{part}_finished",))
    assert await scalar(db, "SELECT sluice.job_prune('7 days', 100)") == 1
    left = await scalar(db, "SELECT array_agg(id ORDER BY id) FROM sluice.jobs")
    assert left == sorted(recent)


async def test_pruning_leaves_partitions_wholly_past_retention_to_their_retirement(db):
    await db.execute(
        "SELECT sluice.history_partition_create('jobs_h20200101',"
        " '2020-01-01 00:00+00', '2020-01-02 00:00+00')"
    )
    old = await make_job(db, "succeeded")
    await db.execute(
        "UPDATE sluice.jobs SET archived_at = '2020-01-01 12:00+00',"
        " finished_at = '2020-01-01 11:00+00' WHERE id = %s",
        (old,),
    )
    assert await where(db, old) == "sluice.jobs_h20200101"
    # Not deleted row by row (nor read, every batch, to be sorted by finished_at) ...
    assert await scalar(db, "SELECT sluice.job_prune('7 days', 100)") == 0
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE id = %s", old) == 1
    # ... but dropped with its partition.
    assert await scalar(db, "SELECT sluice.history_retire('7 days', 10)") == 1
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE id = %s", old) == 0
