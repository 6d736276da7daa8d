"""The overview shows what the database holds, and keeps up as it changes."""

from __future__ import annotations

from playwright.sync_api import expect

from sluice.auth.principal import Role
from tests.dashboard.conftest import shoot
from tests.dashboard.engine import claim, complete, dead_job, enqueue, fail, register_worker, scalar

STATES = ("blocked", "scheduled", "ready", "running", "succeeded", "failed", "cancelled")


def _fill_queues(sql) -> None:
    """Jobs in every state, in two queues, and some of another tenant."""
    for _ in range(3):
        enqueue(sql, queue="default")
    enqueue(sql, queue="default", run_at="8999-12-31")  # scheduled
    parent = enqueue(sql, queue="mail")
    enqueue(sql, queue="mail", depends_on=[parent])  # blocked
    for job in claim(sql, "default", limit=2):  # two succeed
        complete(sql, job)
    [running] = claim(sql, "mail")  # the parent runs
    assert running["id"] == parent
    dead_job(sql, queue="mail")
    dead_job(sql, queue="default")
    retried = enqueue(sql, queue="default", max_attempts=3, priority=-1000)
    [job] = claim(sql, "default")
    assert job["id"] == retried
    fail(sql, job, retryable=True)  # scheduled again, waiting out its backoff
    cancelled = enqueue(sql, queue="mail")
    sql.execute("SELECT sluice.cancel_job(%s)", (cancelled,))
    enqueue(sql, queue="mail", tenant="other")  # not this viewer's
    dead_job(sql, queue="mail", tenant="other")
    register_worker(sql, "worker-a", ["default", "mail"])
    register_worker(sql, "worker-b", ["default"])
    register_worker(sql, "worker-gone", ["default"])
    sql.execute("SELECT sluice.worker_stop('worker-gone')")


def _expected(sql, tenant: str) -> dict[tuple[str, str], int]:
    rows = sql.execute(
        "SELECT queue, state::text, count(*) FROM sluice.jobs WHERE tenant = %s GROUP BY 1, 2",
        (tenant,),
    ).fetchall()
    return {(queue, state): n for queue, state, n in rows}


def test_overview_numbers_match_the_database(sign_in, sql, screenshots):
    _fill_queues(sql)
    page = sign_in(Role.viewer)
    expect(page.locator("#queues tbody tr[data-queue]")).to_have_count(2)

    counts = _expected(sql, "default")
    for queue in ("default", "mail"):
        row = page.locator(f'#queues tr[data-queue="{queue}"]')
        shown = {state: row.locator(f'td[data-state="{state}"]').inner_text() for state in STATES}
        assert shown == {state: str(counts.get((queue, state), 0)) for state in STATES}, queue
    # Every state occurs, so the comparison above covered each column.
    assert {state for _, state in counts} == set(STATES)

    dead = scalar(
        sql,
        "SELECT count(*) FROM sluice.dead_letter_queue WHERE tenant = 'default'",
    )
    alive = scalar(sql, "SELECT count(*) FROM sluice.worker_status WHERE alive")
    assert (dead, alive) == (2, 2)
    expect(page.locator("#dlq-size")).to_have_text(str(dead))
    expect(page.locator("#workers-alive")).to_have_text(str(alive))
    expect(page.locator("#total-ready")).to_have_text(
        str(sum(n for (_, state), n in counts.items() if state == "ready"))
    )
    finished = dict(
        sql.execute(
            "SELECT state::text, count(*) FROM sluice.jobs WHERE tenant = 'default'"
            " AND finished_at > now() - interval '1 hour' GROUP BY 1"
        ).fetchall()
    )
    assert finished == {"succeeded": 2, "failed": 2, "cancelled": 1}
    expect(page.locator("#throughput svg")).to_have_attribute(
        "aria-label",
        "Jobs finished per minute over the last hour: 2 succeeded, 2 failed, 1 cancelled.",
    )
    started = scalar(
        sql,
        "SELECT count(*) FROM sluice.jobs WHERE tenant = 'default' AND started_at IS NOT NULL"
        " AND state IN ('running', 'succeeded', 'failed', 'cancelled')",
    )
    expect(page.locator('#waits tr[data-queue=""] td').first).to_have_text(str(started))
    shoot(page, screenshots, "overview")

    # It refreshes live: a new ready job shows up without a reload.
    enqueue(sql, queue="mail")
    expect(page.locator('#queues tr[data-queue="mail"] td[data-state="ready"]')).to_have_text(
        str(counts.get(("mail", "ready"), 0) + 1)
    )
