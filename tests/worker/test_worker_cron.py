"""Cron: occurrence planning (time zones, misfire policies) and firing through
sluice.schedule_fire, once per occurrence."""

from __future__ import annotations

import datetime as dt

import pytest
from psycopg.types.json import Jsonb

from sluice.worker.cron import NEVER, CronScheduler, plan
from tests.factories import scalar

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """A time: `10:05` is that minute of 2026-01-01 UTC; anything else is ISO 8601."""
    if len(text) == 5:
        text = f"2026-01-01T{text}:00+00:00"
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def plan_at(cron, misfire="latest", *, next_fire_at=None, base, now, grace=60, zone="UTC"):
    return plan(
        cron,
        zone,
        misfire,
        next_fire_at=next_fire_at and at(next_fire_at),
        base=at(base),
        now=at(now),
        grace=grace,
    )


def test_plan_a_new_schedule_waits_for_its_first_occurrence():
    firing = plan_at("*/5 * * * *", base="10:01", now="10:02")
    assert firing.occurrences == []
    assert firing.next_fire_at == at("10:05")


def test_plan_fires_what_is_due_on_time():
    firing = plan_at(
        "*/5 * * * *", "skip", next_fire_at="10:05", base="10:01", now="2026-01-01T10:05:00.3+00:00"
    )
    assert firing.occurrences == [at("10:05")]
    assert firing.next_fire_at == at("10:10")


@pytest.mark.parametrize(
    ("misfire", "fired"),
    [
        ("latest", ["10:50"]),
        ("all", ["10:10", "10:20", "10:30", "10:40", "10:50"]),
        ("skip", []),
    ],
)
def test_plan_misfire_policies_after_downtime(misfire, fired):
    firing = plan_at("*/10 * * * *", misfire, next_fire_at="10:10", base="10:00", now="10:55")
    assert firing.occurrences == [at(t) for t in fired]
    assert firing.next_fire_at == at("11:00")


def test_plan_missed_and_on_time_under_latest_runs_only_the_on_time_one():
    firing = plan_at(
        "* * * * *", next_fire_at="10:00", base="09:59", now="2026-01-01T10:05:10+00:00", grace=30
    )
    assert firing.occurrences == [at("10:05")]


def test_plan_follows_the_time_zone_across_daylight_saving():
    # 02:30 does not exist in Paris on 2026-03-29; 02:30 every day in local time.
    firing = plan_at(
        "30 2 * * *",
        "all",
        base="2026-03-28T12:00:00+00:00",
        now="2026-03-31T12:00:00+00:00",
        zone="Europe/Paris",
    )
    assert firing.occurrences == [
        at("2026-03-29T03:00:00+02:00"),
        at("2026-03-30T02:30:00+02:00"),
        at("2026-03-31T02:30:00+02:00"),
    ]
    assert firing.next_fire_at == at("2026-04-01T02:30:00+02:00")


def test_plan_reports_bad_schedules():
    bad_cron = plan_at("61 * * * *", base="10:00", now="10:00")
    assert bad_cron.error == "invalid cron expression '61 * * * *'"
    assert bad_cron.next_fire_at == NEVER
    bad_zone = plan_at("* * * * *", base="10:00", now="10:00", zone="Mars/Olympus")
    assert bad_zone.error == "unknown time zone 'Mars/Olympus'"


async def add_schedule(db, name: str, cron: str, **columns) -> int:
    columns = {k: Jsonb(v) if k in ("job", "dag_params") else v for k, v in columns.items()}
    names = ", ".join(["name", "cron", *columns])
    marks = ", ".join(["%s"] * (2 + len(columns)))
    return await scalar(
        db,
        f"INSERT INTO sluice.schedules ({names}) VALUES ({marks}) RETURNING id",  # noqa: S608
        name,
        cron,
        *columns.values(),
    )


async def fire(db, schedule_id: int, *occurrences: dt.datetime, seen=None, error=None):
    if seen is None:
        seen = await scalar(
            db, "SELECT updated_at FROM sluice.schedules WHERE id = %s", schedule_id
        )
    return await scalar(
        db,
        "SELECT sluice.schedule_fire(%s, %s, %s::timestamptz[], %s, %s)",
        schedule_id,
        seen,
        list(occurrences),
        at("2030-01-01T00:00:00+00:00"),
        error,
    )


async def test_schedule_fire_enqueues_each_occurrence_once(db):
    sid = await add_schedule(
        db,
        "report",
        "0 * * * *",
        job={
            "task": "echo",
            "payload": {"k": 1},
            "queue": "reports",
            "priority": 3,
            "max_attempts": 2,
            "timeout": 30,
            "backoff_base": "2 seconds",
        },
    )
    occurrence = at("2026-01-01T10:00:00+00:00")
    assert await fire(db, sid, occurrence) == 1
    assert await fire(db, sid, occurrence) == 1  # a second scheduler, or a retry: no new job
    cur = await db.execute(
        "SELECT task, payload, queue, priority, max_attempts, timeout, backoff_base, "
        "       idempotency_key "
        "FROM sluice.jobs"
    )
    assert await cur.fetchall() == [
        (
            "echo",
            {"k": 1},
            "reports",
            3,
            2,
            dt.timedelta(seconds=30),
            dt.timedelta(seconds=2),
            f"schedule:{sid}:2026-01-01T10:00:00Z",
        )
    ]
    cur = await db.execute("SELECT last_fired_at, next_fire_at, last_error FROM sluice.schedules")
    assert await cur.fetchone() == (occurrence, at("2030-01-01T00:00:00+00:00"), None)


async def test_schedule_fire_takes_the_apis_job_template_with_its_nulls(db):
    template = {
        "task": "noop",
        "payload": {},
        "queue": "default",
        "priority": 0,
        "max_attempts": 5,
        "backoff": "exponential",
        "backoff_base": 1.0,
        "backoff_max": 3600.0,
        "timeout": None,
        "notify": None,
    }
    sid = await add_schedule(db, "api-made", "0 * * * *", job=template)
    assert await fire(db, sid, at("2026-01-01T10:00:00+00:00")) == 1
    cur = await db.execute("SELECT timeout, notify, backoff_max FROM sluice.jobs")
    assert await cur.fetchone() == (None, None, dt.timedelta(hours=1))


async def test_schedule_fire_starts_dag_runs(db):
    definition = {
        "nodes": [
            {"id": "a", "task": "noop"},
            {
                "id": "b",
                "task": "echo",
                "payload": {"day": "{{ params.day }}"},
                "depends_on": ["a"],
            },
        ]
    }
    await db.execute(
        "INSERT INTO sluice.dags (name, version, definition) VALUES ('etl', 1, %s)",
        (Jsonb(definition),),
    )
    sid = await add_schedule(db, "nightly", "0 3 * * *", dag_name="etl", dag_params={"day": "mon"})
    occurrence = at("2026-01-01T03:00:00+00:00")
    assert await fire(db, sid, occurrence) == 1
    assert await fire(db, sid, occurrence) == 1
    cur = await db.execute("SELECT id, dag_name, schedule_id, idempotency_key FROM sluice.dag_runs")
    [(run_id, dag, schedule, key)] = await cur.fetchall()
    assert (dag, schedule, key) == ("etl", sid, f"schedule:{sid}:2026-01-01T03:00:00Z")
    payload = await scalar(
        db, "SELECT payload FROM sluice.jobs WHERE run_id = %s AND node = 'b'", run_id
    )
    assert payload == {"day": "mon"}


async def test_schedule_fire_records_a_failure_and_moves_on(db):
    sid = await add_schedule(db, "orphan", "0 3 * * *", dag_name="missing")
    assert await fire(db, sid, at("2026-01-01T03:00:00+00:00")) == 0
    cur = await db.execute("SELECT last_error, next_fire_at, last_fired_at FROM sluice.schedules")
    error, next_fire_at, last_fired_at = await cur.fetchone()
    assert "no DAG named missing" in error
    assert next_fire_at == at("2030-01-01T00:00:00+00:00") and last_fired_at is None
    assert await scalar(db, "SELECT count(*) FROM sluice.dag_runs") == 0


async def test_an_edited_schedule_is_not_fired_from_a_stale_read(db):
    sid = await add_schedule(db, "edited", "0 * * * *", job={"task": "noop"})
    seen = await scalar(db, "SELECT updated_at FROM sluice.schedules WHERE id = %s", sid)
    await db.execute("UPDATE sluice.schedules SET next_fire_at = now() WHERE id = %s", (sid,))
    # Bookkeeping does not count as an edit...
    assert await scalar(db, "SELECT updated_at FROM sluice.schedules") == seen
    await db.execute("UPDATE sluice.schedules SET cron = '*/5 * * * *' WHERE id = %s", (sid,))
    # ...a new cron does: it clears next_fire_at so the scheduler recomputes it.
    cur = await db.execute("SELECT updated_at > %s, next_fire_at FROM sluice.schedules", (seen,))
    assert await cur.fetchone() == (True, None)
    assert await fire(db, sid, at("2026-01-01T10:00:00+00:00"), seen=seen) is None
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 0


async def test_the_scheduler_fires_due_schedules_from_the_database(db, pool):
    sid = await add_schedule(db, "every-second", "* * * * * *", job={"task": "noop"})
    bad = await add_schedule(db, "broken", "not a cron", job={"task": "noop"})
    scheduler = CronScheduler(pool, max_sleep=1.0, grace=60)
    await scheduler.tick()  # computes next_fire_at of the new schedules
    next_fire_at = await scalar(db, "SELECT next_fire_at FROM sluice.schedules WHERE id = %s", sid)
    assert next_fire_at is not None
    await db.execute(
        "UPDATE sluice.schedules SET next_fire_at = next_fire_at - interval '3 seconds' "
        "WHERE id = %s",
        (sid,),
    )
    sleep = await scheduler.tick()
    assert 0 < sleep <= 1.0
    # Every occurrence from the (moved back) next one up to now, each once.
    keys = await scalar(
        db, "SELECT array_agg(idempotency_key ORDER BY idempotency_key) FROM sluice.jobs"
    )
    assert len(keys) >= 2 and all(k.startswith(f"schedule:{sid}:") for k in keys)
    cur = await db.execute(
        "SELECT last_error, next_fire_at FROM sluice.schedules WHERE id = %s", (bad,)
    )
    assert await cur.fetchone() == ("invalid cron expression 'not a cron'", NEVER)
