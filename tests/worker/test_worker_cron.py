"""Cron: occurrence planning (time zones, misfire policies) and firing through
sluice.schedule_fire, once per occurrence."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from psycopg.types.json import Jsonb

from sluice.worker.cron import CronScheduler, plan
from tests.dst import BERLIN, BERLIN_NIGHTS, NIGHTLY
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
    assert bad_cron.next_fire_at is None  # the schedule is disabled
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
    assert await cur.fetchone() == (None, None, None)  # null: the default (1 hour)


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
        "SELECT last_error, enabled, next_fire_at FROM sluice.schedules WHERE id = %s", (bad,)
    )
    assert await cur.fetchone() == ("invalid cron expression 'not a cron'", False, None)


# -- schedules that cannot fire ------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 31 2 *",  # February 31st: never
        "0 10 1 1 * 0 2026",  # once, on 2026-01-01 at 10:00, then never again
    ],
)
def test_plan_a_schedule_with_no_next_date_is_disabled(cron):
    firing = plan_at(cron, base="2026-06-01T00:00:00+00:00", now="2026-06-01T00:00:00+00:00")
    assert firing.occurrences == []
    assert firing.next_fire_at is None
    assert firing.error.startswith(f"no occurrence of {cron!r} after 2026-06-01T00:00:00+00:00")


def test_plan_fires_the_last_occurrence_then_has_none():
    firing = plan_at(
        "0 10 1 1 * 0 2026",
        next_fire_at="2026-01-01T10:00:00+00:00",
        base="2025-12-01T00:00:00+00:00",
        now="2026-01-01T10:00:01+00:00",
    )
    assert firing.occurrences == [at("2026-01-01T10:00:00+00:00")]
    assert firing.next_fire_at is None
    assert "no occurrence" in firing.error


async def test_a_schedule_with_no_next_date_is_disabled_and_the_others_fire(db, pool):
    good = await add_schedule(db, "every-second", "* * * * * *", job={"task": "noop"})
    never = await add_schedule(db, "february-31", "0 0 31 2 *", job={"task": "noop"})
    await db.execute("UPDATE sluice.schedules SET next_fire_at = now() - interval '2 seconds'")
    scheduler = CronScheduler(pool, max_sleep=1.0, grace=60)
    await scheduler.tick()
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") >= 2  # the good one fired
    cur = await db.execute(
        "SELECT enabled, last_error FROM sluice.schedules WHERE id = %s", (never,)
    )
    enabled, error = await cur.fetchone()
    assert not enabled
    assert error.startswith("no occurrence of '0 0 31 2 *' after")
    assert await scalar(db, "SELECT enabled FROM sluice.schedules WHERE id = %s", good)


# -- daylight saving time, through the database, with the clock driven --------


@pytest.mark.parametrize("day", sorted(BERLIN_NIGHTS))
async def test_a_local_daily_schedule_fires_once_on_a_daylight_saving_night(db, pool, day):
    sid = await add_schedule(db, "nightly", NIGHTLY, timezone=BERLIN, job={"task": "noop"})
    # Created the evening before; then a scheduler passes every ten minutes until noon.
    start = dt.datetime.fromisoformat(f"{day}T18:00:00+00:00") - dt.timedelta(days=1)
    await db.execute("UPDATE sluice.schedules SET updated_at = %s", (start,))
    scheduler = CronScheduler(pool, max_sleep=600, grace=60)
    now = start
    while now < start + dt.timedelta(hours=18):
        await scheduler.tick(now)
        now += dt.timedelta(minutes=10)
    cur = await db.execute("SELECT idempotency_key FROM sluice.jobs ORDER BY id")
    keys = [k for (k,) in await cur.fetchall()]
    expected = [at(t) for t in BERLIN_NIGHTS[day]]
    wall = [t.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%dT%H:%M:%S") for t in expected]
    assert keys == [f"schedule:{sid}:{w}[Europe/Berlin]" for w in wall]
    assert await scalar(db, "SELECT last_fired_at FROM sluice.schedules") == expected[-1]
    assert await scalar(db, "SELECT last_error FROM sluice.schedules") is None


def test_plan_across_both_berlin_transitions_fires_each_wall_clock_time_once():
    firing = plan_at(
        "30 2 * * *",
        "all",
        base="2026-03-28T00:00:00+00:00",
        now="2026-10-26T12:00:00+00:00",
        zone="Europe/Berlin",
    )
    fired = firing.occurrences
    # One a day, 2026-03-28 to 2026-10-26 inclusive.
    days = (dt.date(2026, 10, 26) - dt.date(2026, 3, 28)).days + 1
    assert len(fired) == len(set(fired)) == days
    local = {t.astimezone(ZoneInfo("Europe/Berlin")).isoformat() for t in fired}
    assert "2026-03-29T03:00:00+02:00" in local
    assert "2026-10-25T02:30:00+02:00" in local
    assert "2026-10-25T02:30:00+01:00" not in local
    assert firing.next_fire_at == at("2026-10-27T02:30:00+01:00")


def test_plan_an_interval_schedule_skips_the_repeated_hour_of_a_fall_back():
    firing = plan_at(
        "*/30 * * * *",
        "all",
        base="2026-10-24T23:50:00+00:00",  # 01:50 CEST
        now="2026-10-25T02:10:00+00:00",  # 03:10 CET
        zone="Europe/Berlin",
    )
    local = [
        t.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M%z") for t in firing.occurrences
    ]
    assert local == ["02:00+0200", "02:30+0200", "03:00+0100"]


async def test_two_instants_of_one_wall_clock_time_start_one_job(db):
    sid = await add_schedule(
        db, "nightly", "30 2 * * *", timezone="Europe/Berlin", job={"task": "noop"}
    )
    cest, cet = at("2026-10-25T00:30:00+00:00"), at("2026-10-25T01:30:00+00:00")
    assert await fire(db, sid, cest, cet) == 2  # both handled...
    keys = await scalar(db, "SELECT array_agg(idempotency_key) FROM sluice.jobs")
    assert keys == [f"schedule:{sid}:2026-10-25T02:30:00[Europe/Berlin]"]  # ...one job


# -- one bad schedule row stops nothing else ----------------------------------


async def test_schedules_the_scheduler_cannot_read_or_update_stop_no_other(db, pool):
    good = await add_schedule(db, "every-second", "* * * * * *", job={"task": "noop"})
    unreadable = await add_schedule(db, "unreadable", "* * * * * *", job={"task": "noop"})
    stuck = await add_schedule(db, "stuck", "* * * * * *", job={"task": "noop"})
    await db.execute("UPDATE sluice.schedules SET next_fire_at = now() - interval '2 seconds'")
    # A time Python cannot represent, and a row no UPDATE can pass (a user's trigger).
    await db.execute(
        "UPDATE sluice.schedules SET last_fired_at = '-infinity' WHERE id = %s", (unreadable,)
    )
    await db.execute("""
        CREATE FUNCTION public.refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'row % refuses every update', OLD.id; END $$""")
    await db.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON sluice.schedules FOR EACH ROW "
        f"WHEN (OLD.id = {stuck}) EXECUTE FUNCTION public.refuse_update()"
    )
    scheduler = CronScheduler(pool, max_sleep=1.0, grace=60)
    for _ in range(2):  # the stuck one is due again at the second pass, and skipped again
        assert 0 < await scheduler.tick() <= 1.0
    cur = await db.execute("SELECT id, enabled, last_error FROM sluice.schedules ORDER BY id")
    state = {i: (enabled, error) for i, enabled, error in await cur.fetchall()}
    assert state[good] == (True, None)
    assert state[unreadable][0] is False
    assert "last_fired_at: timestamp too small" in state[unreadable][1]
    assert state[stuck] == (True, None)
    owners = await scalar(
        db, "SELECT array_agg(DISTINCT split_part(idempotency_key, ':', 2)) FROM sluice.jobs"
    )
    assert owners == [str(good)]


async def test_an_infinite_next_fire_at_does_not_stop_the_scheduler(db, pool):
    await add_schedule(db, "far", "* * * * *", job={"task": "noop"})
    await db.execute("UPDATE sluice.schedules SET next_fire_at = 'infinity'")
    assert await CronScheduler(pool, max_sleep=1.0, grace=60).tick() == 1.0
