"""The jobs list (filters, search by id) and a job's page (payload, result,
attempts as a timeline, Cancel and Retry)."""

from __future__ import annotations

from playwright.sync_api import expect

from sluice.auth.principal import Role
from tests.dashboard.conftest import shoot
from tests.dashboard.engine import claim, enqueue, fail, scalar


def test_jobs_filter_search_and_a_jobs_attempts(sign_in, api_server, sql, screenshots):
    mail = [enqueue(sql, "sleep", queue="mail", payload={"seconds": 1}) for _ in range(2)]
    flaky = enqueue(sql, "reports.build", payload={"day": "2024-01-31"}, max_attempts=2)
    for _ in range(2):
        # Its backoff over at once, so the maintenance promotion makes it ready now.
        sql.execute(
            "UPDATE sluice.jobs SET run_at = now() WHERE id = %s AND state = 'scheduled'", (flaky,)
        )
        sql.execute("SELECT sluice.job_promote_scheduled(10)")
        [job] = claim(sql)
        fail(sql, job, error=f"attempt {job['attempt']}: disk full", retryable=True)
    assert scalar(sql, "SELECT state::text FROM sluice.jobs WHERE id = %s", flaky) == "failed"

    page = sign_in(Role.operator)
    page.goto("/jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(3)
    page.select_option("#f-state", "ready")
    page.fill("#f-queue", "mail")
    page.click("#filters button[type=submit]")
    expect(page).to_have_url(
        f"{api_server}/jobs?state=ready&queue=mail&task=&created_after=&created_before="
    )
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    assert (
        sorted(
            int(r)
            for r in page.locator("#jobs tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.job)"
            )
        )
        == mail
    )
    shoot(page, screenshots, "jobs")

    page.fill("#find-id", str(flaky))
    page.press("#find-id", "Enter")
    expect(page).to_have_url(f"{api_server}/jobs/{flaky}")
    expect(page.locator("#job-state")).to_have_text("failed")
    expect(page.locator("#payload")).to_contain_text('"day": "2024-01-31"')
    attempts = page.locator("#attempts li")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("attempt 1: disk full")
    expect(attempts.nth(1)).to_contain_text("attempt 2: disk full")
    attempts.nth(1).locator("summary").click()
    expect(attempts.nth(1).locator("pre.output")).to_have_text("Traceback: boom")
    expect(page.locator("#cancel")).to_have_count(0)  # finished: nothing to cancel
    shoot(page, screenshots, "job")

    page.click("#retry")
    expect(page.locator("#job-state")).to_have_text("ready")
    assert scalar(sql, "SELECT state::text FROM sluice.jobs WHERE id = %s", flaky) == "ready"
    page.click("#cancel")
    expect(page.locator("#job-state")).to_have_text("cancelled")
    assert scalar(sql, "SELECT reason FROM sluice.jobs WHERE id = %s", flaky) == "cancelled"
