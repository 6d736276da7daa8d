"""GET /api/v1/schedules/{id}/upcoming: the next fire times, in the schedule's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from tests.api.conftest import bearer
from tests.dst import BERLIN, BERLIN_NIGHTS, NIGHTLY

SCHEDULES = "/api/v1/schedules"


async def test_upcoming_times_follow_the_cron_expression_in_its_time_zone(client, operator, db):
    created = await client.post(
        SCHEDULES,
        json={
            "name": "paris-morning",
            "cron": "30 6 * * *",
            "timezone": "Europe/Paris",
            "job": {"task": "noop"},
            "enabled": False,
        },
        headers=operator,
    )
    schedule = created.json()
    answer = await client.get(
        f"{SCHEDULES}/{schedule['id']}/upcoming", params={"count": 3}, headers=bearer("viewer")
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["schedule_id"] == schedule["id"] and body["enabled"] is False
    times = [datetime.fromisoformat(t) for t in body["times"]]
    paris = [t.astimezone(ZoneInfo("Europe/Paris")) for t in times]
    assert [(t.hour, t.minute) for t in paris] == [(6, 30)] * 3
    assert [b.date() - a.date() for a, b in pairwise(paris)] == [timedelta(days=1)] * 2
    assert (
        datetime.now(ZoneInfo("UTC"))
        < times[0]
        < datetime.now(ZoneInfo("UTC")) + timedelta(days=1, minutes=1)
    )

    other = await client.get(
        f"{SCHEDULES}/{schedule['id']}/upcoming", headers=bearer("viewer", "other")
    )
    assert other.status_code == 404
    too_many = await client.get(
        f"{SCHEDULES}/{schedule['id']}/upcoming", params={"count": 101}, headers=operator
    )
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "count"

    # An expression croniter cannot read, stored by plain SQL, is a conflict, not a 500.
    await db.execute(
        "UPDATE sluice.schedules SET cron = 'every tuesday' WHERE id = %s", (schedule["id"],)
    )
    broken = await client.get(f"{SCHEDULES}/{schedule['id']}/upcoming", headers=operator)
    assert broken.status_code == 409 and "cron" in broken.json()["message"]


# -- the scheduler's rule: no next date, daylight saving time -----------------


async def test_a_one_shot_schedule_lists_its_one_time_then_none(client, operator, db):
    year = datetime.now(UTC).year
    created = await client.post(
        SCHEDULES,
        json={"name": "once", "cron": f"0 0 1 1 * 0 {year + 1}", "job": {"task": "noop"}},
        headers=operator,
    )
    assert created.status_code == 201, created.text
    url = f"{SCHEDULES}/{created.json()['id']}/upcoming"
    answer = await client.get(url, params={"count": 5}, headers=operator)
    assert answer.status_code == 200, answer.text
    assert [datetime.fromisoformat(t) for t in answer.json()["times"]] == [
        datetime(year + 1, 1, 1, tzinfo=UTC)
    ]
    after = await client.get(url, params={"after": f"{year + 1}-01-02T00:00:00Z"}, headers=operator)
    assert after.status_code == 200 and after.json()["times"] == []
    for edge in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        answer = await client.get(url, params={"after": edge}, headers=operator)
        assert answer.status_code == 200 and answer.json()["times"] == [], edge

    # Once its date has passed (as time goes by: set by SQL), the list is empty.
    await db.execute("UPDATE sluice.schedules SET cron = %s", (f"0 0 1 1 * 0 {year - 1}",))
    past = await client.get(url, headers=operator)
    assert past.status_code == 200, past.text
    assert past.json()["times"] == []
    # It can still be renamed or disabled; enabling it again is refused, naming cron.
    schedule = f"{SCHEDULES}/{created.json()['id']}"
    renamed = await client.patch(schedule, json={"name": "was-once"}, headers=operator)
    assert renamed.status_code == 200, renamed.text
    assert (await client.patch(schedule, json={"enabled": False}, headers=operator)).is_success
    enabled = await client.patch(schedule, json={"enabled": True}, headers=operator)
    assert enabled.status_code == 422 and enabled.json()["errors"][0]["field"] == "cron"

    # A new schedule that would never fire is refused, naming the field.
    refused = await client.post(
        SCHEDULES,
        json={"name": "too-late", "cron": f"0 0 1 1 * 0 {year - 1}", "job": {"task": "noop"}},
        headers=operator,
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "cron"
    assert "no occurrence" in refused.json()["errors"][0]["message"]


@pytest.mark.parametrize("day", sorted(BERLIN_NIGHTS))
async def test_a_daylight_saving_night_lists_each_wall_clock_time_once(client, operator, day):
    created = await client.post(
        SCHEDULES,
        json={"name": "nightly", "cron": NIGHTLY, "timezone": BERLIN, "job": {"task": "noop"}},
        headers=operator,
    )
    evening = datetime.fromisoformat(f"{day}T18:00:00+00:00") - timedelta(days=1)
    answer = await client.get(
        f"{SCHEDULES}/{created.json()['id']}/upcoming",
        params={"count": 2, "after": evening.isoformat()},
        headers=operator,
    )
    assert answer.status_code == 200, answer.text
    times = [datetime.fromisoformat(t) for t in answer.json()["times"]]
    # What the scheduler fires that night (tests/worker/test_worker_cron.py), then
    # the next night's 02:30 (not the repeated hour).
    assert times[:1] == [datetime.fromisoformat(t) for t in BERLIN_NIGHTS[day]]
    next_night = times[1].astimezone(ZoneInfo(BERLIN))
    assert next_night.date() == date.fromisoformat(day) + timedelta(days=1)
    assert (next_night.hour, next_night.minute) == (2, 30)
