"""The dead-letter queue page: retry one entry and see it leave; act on many."""

from __future__ import annotations

from playwright.sync_api import expect

from sluice.auth.principal import Role
from tests.dashboard.conftest import shoot
from tests.dashboard.engine import dead_job, scalar


def _state(sql, job_id: int) -> str:
    return scalar(sql, "SELECT state::text FROM sluice.jobs WHERE id = %s", job_id)


def _open_letters(sql) -> int:
    return scalar(sql, "SELECT count(*) FROM sluice.dead_letters WHERE resolved_at IS NULL")


def test_retrying_a_dead_letter_takes_it_off_the_list(sign_in, sql, screenshots):
    first, second, third = (dead_job(sql, queue="mail") for _ in range(3))
    page = sign_in(Role.operator)
    page.goto("/dlq")
    rows = page.locator("#dlq tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator(f'#dlq tr[data-job="{second}"]')).to_contain_text(f"job {second} exploded")
    expect(page.locator("#dlq-count")).to_have_text("(3)")
    shoot(page, screenshots, "dlq")

    page.locator(f'#dlq tr[data-job="{second}"]').get_by_role("button", name="Retry").click()
    expect(page.locator(f'#dlq tr[data-job="{second}"]')).to_have_count(0)
    expect(rows).to_have_count(2)
    expect(page.locator("#notice")).to_have_text("1 retried.")
    assert _state(sql, second) == "ready" and _open_letters(sql) == 2

    # Select the rest and discard them together (after confirming).
    page.once("dialog", lambda dialog: dialog.accept())
    page.check("#select-all")
    expect(page.locator("#discard-selected")).to_be_enabled()
    page.click("#discard-selected")
    expect(page.locator("#dlq-empty")).to_be_visible()
    expect(page.locator("#notice")).to_have_text("2 discarded.")
    assert _open_letters(sql) == 0
    assert (_state(sql, first), _state(sql, third)) == ("failed", "failed")


PHONE = {"width": 390, "height": 844}


def test_the_dlq_page_works_on_a_390px_screen(sign_in, sql, screenshots):
    """On a phone: nothing wider than the screen, each entry readable, Retry reachable."""
    long_error = "ConnectionError: " + "upstream.example.com refused the connection; " * 6
    jobs = [dead_job(sql, queue="notifications-outbound-eu-west") for _ in range(2)]
    sql.execute(
        "UPDATE sluice.jobs SET last_error = %s, task = 'reports.monthly_revenue_rollup'"
        " WHERE id = ANY(%s)",
        (long_error, jobs),
    )
    sql.execute(
        "UPDATE sluice.dead_letters SET last_error = %s WHERE job_id = ANY(%s)", (long_error, jobs)
    )
    page = sign_in(Role.operator, viewport=PHONE, is_mobile=True)
    page.goto("/dlq")
    rows = page.locator("#dlq tbody tr")
    expect(rows).to_have_count(2)
    page.locator(f'#dlq tr[data-job="{jobs[1]}"] summary').click()  # the error history
    shoot(page, screenshots, "dlq-390px")
    overflow = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert overflow[0] <= overflow[1] == 390, overflow
    for job_id in jobs:
        box = page.locator(f'#dlq tr[data-job="{job_id}"]').bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    retry = page.locator(f'#dlq tr[data-job="{jobs[0]}"]').get_by_role("button", name="Retry")
    button = retry.bounding_box()
    assert button["x"] >= 0 and button["x"] + button["width"] <= 390, button
    retry.click()
    expect(rows).to_have_count(1)
    assert _state(sql, jobs[0]) == "ready"
