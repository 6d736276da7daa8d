"""The queues page flags a queue whose jobs no live worker takes."""

from __future__ import annotations

from playwright.sync_api import expect

from sluice.auth.principal import Role
from tests.dashboard.conftest import shoot
from tests.dashboard.engine import enqueue, register_worker


def test_a_queue_with_jobs_and_no_live_worker_is_flagged(sign_in, sql, screenshots):
    register_worker(sql, "mailer-less", ["default"])
    enqueue(sql, queue="default")
    enqueue(sql, queue="mail")  # nobody takes mail
    enqueue(sql, queue="reports")
    register_worker(sql, "paused-reporter", ["reports"])
    sql.execute("SELECT sluice.worker_set_paused('paused-reporter', true)")
    page = sign_in(Role.viewer)
    page.goto("/queues")
    flagged = page.locator("#queues tr:has(.no-consumer)")
    expect(flagged).to_have_count(2)
    expect(page.locator('#queues tr[data-queue="mail"] .no-consumer')).to_have_text(
        "no live worker"
    )
    expect(page.locator('#queues tr[data-queue="reports"] .no-consumer')).to_be_visible()
    expect(page.locator('#queues tr[data-queue="default"] .no-consumer')).to_have_count(0)
    # The page and the view agree.
    view = dict(sql.execute("SELECT queue, no_consumer FROM sluice.queue_stats").fetchall())
    assert view == {"default": False, "mail": True, "reports": True}
    shoot(page, screenshots, "queues-no-consumer")

    # A worker taking every queue (`*`, as `sluice up`'s do) takes mail and reports too.
    register_worker(sql, "takes-everything", ["*"])
    page.reload()
    expect(page.locator('#queues tr[data-queue="mail"]')).to_have_attribute("data-consumers", "1")
    expect(page.locator('#queues tr[data-queue="default"]')).to_have_attribute(
        "data-consumers", "2"
    )
    expect(flagged).to_have_count(0)
    view = dict(sql.execute("SELECT queue, no_consumer FROM sluice.queue_stats").fetchall())
    assert view == {"default": False, "mail": False, "reports": False}
