"""Signing in (the login link, a pasted token), the session cookie, signing out,
and CSRF: in a real browser against `sluice api`."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect

from sluice.auth.principal import Role
from sluice.auth.session import COOKIE
from tests.api.conftest import bearer
from tests.dashboard.conftest import EVENTUALLY_MS, shoot, token
from tests.dashboard.engine import enqueue, scalar


def _paused(sql, queue: str) -> bool:
    return bool(scalar(sql, "SELECT count(*) FROM sluice.queues WHERE name = %s AND paused", queue))


def test_the_login_link_keeps_the_token_in_an_http_only_cookie(browser: Browser, api_server):
    context = browser.new_context(base_url=api_server)
    page = context.new_page()
    page.goto(f"/login?token={token(Role.viewer, subject='ada')}")
    # Redirected to the overview, the token gone from the address bar.
    expect(page).to_have_url(f"{api_server}/")
    expect(page.locator("header .who")).to_contain_text("ada")
    expect(page.locator("#role")).to_have_text("viewer")
    [cookie] = [c for c in context.cookies() if c["name"] == COOKIE]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http here; https gets Secure
    assert cookie["expires"] > 0  # it ends with the token, not with the browser session
    assert COOKIE not in page.evaluate("document.cookie")  # scripts cannot read it
    assert "token=" not in "".join(
        page.evaluate("[...performance.getEntriesByType('navigation')].map(e => e.name)")
    )
    context.close()


def test_a_pasted_token_signs_in_and_signing_out_forgets_it(
    browser: Browser, api_server, screenshots
):
    context = browser.new_context(base_url=api_server)
    page = context.new_page()
    page.set_default_timeout(EVENTUALLY_MS)
    page.goto("/queues")
    expect(page).to_have_url(f"{api_server}/login?next=/queues")
    shoot(page, screenshots, "login")

    page.fill("#token", "not.a.token")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("not accepted")
    assert not [c for c in context.cookies() if c["name"] == COOKIE]

    page.fill("#token", token(Role.operator))
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{api_server}/queues")  # back where it was going
    expect(page.locator("#role")).to_have_text("operator")
    # The page's script has run (it stamps #updated), so Sign out has its handler:
    # clicked before that, under load, the button did nothing.
    expect(page.locator("#updated")).to_contain_text("Updated")

    page.click("#logout")
    expect(page).to_have_url(f"{api_server}/login")
    assert not [c for c in context.cookies() if c["name"] == COOKIE]
    page.goto("/")
    expect(page).to_have_url(f"{api_server}/login?next=/")
    context.close()


def test_cookie_writes_need_the_csrf_token_and_bearer_writes_do_not(sign_in, api_server, sql):
    enqueue(sql, queue="mail")
    page = sign_in(Role.operator)

    def post(path: str, headers: dict) -> int:
        return page.evaluate(
            "([path, headers]) => fetch(path, {method: 'POST', headers}).then(r => r.status)",
            [path, headers],
        )

    # What a forged request can send: the cookie, but no token from our page.
    assert post("/api/v1/queues/mail/pause", {}) == 403
    assert post("/api/v1/queues/mail/pause", {"X-CSRF-Token": "guess"}) == 403
    assert not _paused(sql, "mail")
    # The page's own token makes it through.
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    assert post("/api/v1/queues/mail/pause", {"X-CSRF-Token": csrf}) == 200
    assert _paused(sql, "mail")
    # An API client with a Bearer header needs no CSRF token, from the page or anywhere.
    assert post("/api/v1/queues/mail/resume", bearer(Role.operator)) == 200
    assert not _paused(sql, "mail")
    answer = httpx.post(f"{api_server}/api/v1/queues/mail/pause", headers=bearer(Role.operator))
    assert answer.status_code == 200 and _paused(sql, "mail")
