"""Throughput per minute, wait-time percentiles and the DLQ's size: the read
endpoints behind the dashboard's overview, against rows whose times we set."""

from __future__ import annotations

from datetime import datetime

from tests.api.conftest import bearer
from tests.factories import claim, complete, make_job, scalar

API = "/api/v1"


async def _finished_minutes_before(db, job_id: int, minute: datetime, minutes: int) -> None:
    """The job finished `minutes` minutes before `minute`, at the first instant of
    that minute. `minute` began before the job was made, so that is never after
    the job's archiving (jobs_archived_after_finish)."""
    await db.execute(
        "UPDATE sluice.jobs SET finished_at = %s - make_interval(mins => %s) WHERE id = %s",
        (minute, minutes, job_id),
    )


async def test_throughput_counts_each_minute_by_outcome(client, viewer, db):
    # Every answer is read against the minute the jobs were placed in: should the
    # clock pass into the next minute meanwhile (CI runs at any time, loaded), the
    # jobs are placed again, against the new minute.
    for _ in range(3):
        await db.execute("TRUNCATE sluice.jobs CASCADE")
        minute = await scalar(db, "SELECT date_trunc('minute', now())")
        for minutes, state, queue in [
            (0, "succeeded", "default"),
            (0, "succeeded", "mail"),
            (0, "failed", "default"),
            (3, "succeeded", "default"),
            (3, "cancelled", "default"),
            (59, "failed", "default"),
            (61, "succeeded", "default"),  # outside the hour
        ]:
            job_id = await make_job(db, state, queue=queue)
            await _finished_minutes_before(db, job_id, minute, minutes)
        job_id = await make_job(db, "succeeded", tenant="other")
        await _finished_minutes_before(db, job_id, minute, 0)
        await make_job(db, "ready")  # not finished: not counted

        answer = await client.get(f"{API}/jobs/throughput", headers=viewer)
        mail = await client.get(
            f"{API}/jobs/throughput", params={"queue": "mail", "minutes": 5}, headers=viewer
        )
        everyone = await client.get(
            f"{API}/jobs/throughput", params={"minutes": 1}, headers=bearer("admin")
        )
        answers = (answer, mail, everyone)
        for got in answers:
            assert got.status_code == 200, got.text
        last = {datetime.fromisoformat(got.json()["items"][-1]["minute"]) for got in answers}
        if last == {minute}:
            break
    assert last == {minute}, "the clock passed into another minute three times"

    items = answer.json()["items"]
    assert len(items) == 60 and items[0]["minute"] < items[-1]["minute"]
    counts = [(i["succeeded"], i["failed"], i["cancelled"]) for i in items]
    assert counts[-1] == (2, 1, 0)  # this minute; the other tenant's job is not counted
    assert counts[-4] == (1, 0, 1)
    assert counts[0] == (0, 1, 0)
    assert sum(map(sum, counts)) == 6

    assert [(i["succeeded"], i["failed"]) for i in mail.json()["items"]] == [(0, 0)] * 4 + [(1, 0)]
    assert everyone.json()["items"][0]["succeeded"] == 3
    too_far = await client.get(f"{API}/jobs/throughput", params={"minutes": 0}, headers=viewer)
    assert too_far.status_code == 422 and too_far.json()["errors"][0]["field"] == "minutes"


async def _waited(db, job_id: int, seconds: float) -> None:
    await db.execute(
        "UPDATE sluice.jobs SET run_at = started_at - make_interval(secs => %s) WHERE id = %s",
        (seconds, job_id),
    )


async def test_wait_times_are_percentiles_per_queue_and_overall(client, viewer, db):
    for seconds in (1, 2, 3, 4):
        await _waited(db, await make_job(db, "succeeded"), seconds)
    await _waited(db, await make_job(db, "running", queue="mail"), 10)
    await _waited(db, await make_job(db, "succeeded", tenant="other"), 100)
    await make_job(db, "cancelled")  # never started: no wait to measure
    old = await make_job(db, "succeeded")
    await db.execute(
        "UPDATE sluice.jobs SET started_at = now() - interval '2 hours' WHERE id = %s", (old,)
    )

    answer = await client.get(f"{API}/jobs/wait-times", headers=viewer)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    overall = body["overall"]
    assert overall["queue"] is None and overall["jobs"] == 5
    assert overall["p50"] == 3.0 and overall["max"] == 10.0
    # percentile_cont interpolates: 90% of the way through 1, 2, 3, 4, 10 is 7.6.
    assert abs(overall["p90"] - 7.6) < 1e-6
    by_queue = {q["queue"]: q for q in body["items"]}
    assert set(by_queue) == {"default", "mail"}
    assert by_queue["default"]["jobs"] == 4 and by_queue["default"]["p50"] == 2.5
    assert by_queue["mail"]["p99"] == 10.0

    nothing = await client.get(f"{API}/jobs/wait-times", headers=bearer("viewer", "empty"))
    assert nothing.json()["overall"] == {
        "queue": None,
        "jobs": 0,
        "p50": None,
        "p90": None,
        "p99": None,
        "max": None,
    }
    assert nothing.json()["items"] == []


async def test_a_dag_child_waits_from_when_its_last_parent_finished(client, submitter, db):
    definition = {
        "nodes": [{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": ["a"]}]
    }
    run = await client.post(f"{API}/runs", json={"definition": definition}, headers=submitter)
    graph = await client.get(f"{API}/runs/{run.json()['id']}", headers=submitter)
    a, b = (node["job_id"] for node in graph.json()["nodes"])
    await claim(db, a)
    await complete(db, a)
    await claim(db, b)
    # b was created (its run_at) long before a finished, then claimed 5 s after a finished.
    await db.execute(
        "UPDATE sluice.jobs SET run_at = now() - interval '50 minutes',"
        " started_at = now() - interval '40 minutes', finished_at = now() - interval '5 seconds'"
        " WHERE id = %s",
        (a,),
    )
    await db.execute(
        "UPDATE sluice.jobs SET run_at = now() - interval '50 minutes', started_at = now()"
        " WHERE id = %s",
        (b,),
    )
    waits = (await client.get(f"{API}/jobs/wait-times", headers=submitter)).json()["overall"]
    assert waits["jobs"] == 2
    a_wait = waits["max"]
    b_wait = 2 * waits["p50"] - a_wait  # the median of two values is their mean
    assert abs(a_wait - 600) < 1 and abs(b_wait - 5) < 1


async def test_dlq_size_counts_the_tenants_open_dead_letters(client, operator, db):
    first = await make_job(db, "failed")
    await make_job(db, "failed")
    await make_job(db, "failed", tenant="other")
    assert (await client.get(f"{API}/dlq/size", headers=operator)).json() == {"size": 2}
    await client.post(f"{API}/dlq/{first}/retry", headers=operator)
    assert (await client.get(f"{API}/dlq/size", headers=operator)).json() == {"size": 1}
    everyone = await client.get(f"{API}/dlq/size", headers=bearer("admin"))
    assert everyone.json() == {"size": 2}
