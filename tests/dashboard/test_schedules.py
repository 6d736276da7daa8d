"""Schedules show their times as the schedule's own time zone's clock shows them."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from sluice.auth.principal import Role
from tests.api.conftest import bearer
from tests.dashboard.conftest import shoot


def test_fire_times_are_shown_in_the_schedules_time_zone(sign_in, api_server, screenshots):
    created = httpx.post(
        f"{api_server}/api/v1/schedules",
        json={"name": "tokyo-morning", "cron": "0 9 * * *", "timezone": "Asia/Tokyo",
              "job": {"task": "noop"}},
        headers=bearer(Role.operator),
    )  # fmt: skip
    assert created.status_code == 201, created.text
    # A viewer in New York: 09:00 in Tokyo is 19:00 or 20:00 there, never 09:00.
    page = sign_in(Role.viewer, timezone_id="America/New_York", locale="en-GB")
    page.goto("/schedules")
    upcoming = page.locator('#schedules tr[data-schedule="tokyo-morning"] li time')
    expect(upcoming).to_have_count(3)
    for text in upcoming.all_inner_texts():
        assert "09:00 Asia/Tokyo" in text, text
    assert upcoming.first.get_attribute("data-zone") == "Asia/Tokyo"
    assert "(your time)" in upcoming.first.get_attribute("title")
    shoot(page, screenshots, "schedules")
