"""GET /api/v1/schedules/{id}/upcoming: the next fire times, in the schedule's zone."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from tests.api.conftest import bearer

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
