"""What each role sees: a viewer no action buttons anywhere, an operator all of
them (and they work); another tenant sees none of this tenant's jobs."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from sluice.auth.principal import Role
from tests.api.conftest import bearer
from tests.dashboard.conftest import shoot
from tests.dashboard.engine import claim, dead_job, enqueue, fail, scalar
from tests.dashboard.test_runs import start_run

# Buttons that change something; the others (Filter, Open, Load more, Actual size,
# Sign out) only change what is shown.
ACTIONS = (
    "Cancel",
    "Retry",
    "Discard",
    "Pause",
    "Resume",
    "Set",
    "Enable",
    "Disable",
    "Retry selected",
    "Discard selected",
    "Retry failed nodes",
    "Cancel run",
)


def _setup(api_server: str, sql) -> dict[str, str]:
    """Something to act on in every page; returns the pages and what each waits for."""
    ready = enqueue(sql, queue="mail")
    dead = dead_job(sql)
    run = start_run(api_server, {"nodes": [{"id": "a", "task": "noop"}]})
    [job] = claim(sql)
    fail(sql, job)  # the run fails: retryable from its page
    schedule = httpx.post(
        f"{api_server}/api/v1/schedules",
        json={"name": "hourly", "cron": "0 * * * *", "job": {"task": "noop"}},
        headers=bearer(Role.operator),
    )
    assert schedule.status_code == 201, schedule.text
    return {
        f"/jobs/{ready}": "#facts dd",
        "/jobs": "#jobs tbody tr",
        f"/runs/{run['id']}": "svg.dag g.node[data-state=failed]",
        "/runs": "#runs tbody tr",
        "/dlq": f'#dlq tr[data-job="{dead}"]',
        "/queues": '#queues tr[data-queue="mail"]',
        "/schedules": '#schedules tr[data-schedule="hourly"] li',
        "/": '#queues tr[data-queue="mail"]',
    }


def _actions_on(page: Page, path: str, loaded: str) -> list[str]:
    page.goto(path)
    # Each page's script draws its buttons with the data that `loaded` waits for.
    expect(page.locator(loaded).first).to_be_visible()
    names = page.locator("main button").evaluate_all(
        "buttons => buttons.map(b => b.textContent.trim())"
    )
    checkboxes = page.locator("main input[type=checkbox]").count()
    return [name for name in names if name in ACTIONS] + ["checkbox"] * checkboxes


def test_a_viewer_sees_no_action_buttons(sign_in, api_server, sql):
    pages = _setup(api_server, sql)
    operator = sign_in(Role.operator)
    offered = {path: _actions_on(operator, path, loaded) for path, loaded in pages.items()}
    # The operator is offered actions on every page that has any (lists and the
    # overview only link to the pages where things are done).
    lists = {"/", "/jobs", "/runs"}
    assert all(offered[path] for path in pages if path not in lists), offered

    viewer = sign_in(Role.viewer)
    for path, loaded in pages.items():
        assert _actions_on(viewer, path, loaded) == [], path


def test_operator_actions_on_queues_and_schedules(sign_in, api_server, sql, screenshots):
    _setup(api_server, sql)
    page = sign_in(Role.operator)
    page.goto("/queues")
    mail = page.locator('#queues tr[data-queue="mail"]')
    expect(mail.locator('td[data-state="ready"]')).to_have_text("1")
    shoot(page, screenshots, "queues")
    mail.get_by_role("button", name="Pause").click()
    expect(mail).to_contain_text("paused")
    assert scalar(sql, "SELECT paused FROM sluice.queues WHERE name = 'mail'") is True
    mail.get_by_label("Concurrency limit of mail").fill("3")
    mail.get_by_role("button", name="Set").click()
    expect(page.locator("#notice")).to_have_text("mail: at most 3 at once.")
    assert scalar(sql, "SELECT concurrency_limit FROM sluice.queues WHERE name = 'mail'") == 3

    page.goto("/schedules")
    hourly = page.locator('#schedules tr[data-schedule="hourly"]')
    expect(hourly.locator("li")).to_have_count(3)  # the next three fire times
    shoot(page, screenshots, "schedules")
    hourly.get_by_role("button", name="Disable").click()
    expect(hourly).to_contain_text("disabled")
    assert scalar(sql, "SELECT enabled FROM sluice.schedules WHERE name = 'hourly'") is False


def test_another_tenant_sees_none_of_these_jobs(sign_in, sql):
    job = enqueue(sql, queue="mail")
    page = sign_in(Role.operator, tenant="other")
    page.goto("/jobs")
    expect(page.locator("#jobs-empty")).to_be_visible()
    page.goto(f"/jobs/{job}")
    expect(page.locator("#job-missing")).to_be_visible()
