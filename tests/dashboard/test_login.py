"""The sign-in endpoints and the dashboard's response headers, over HTTP (no
browser): the cookie's attributes, where sign-in may send you, refusals.

Sync tests: the browser tests' Playwright owns this thread's event loop while
chromium runs, so a client here runs the app in a thread of its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from litestar.testing import TestClient

from sluice.auth.principal import Role
from sluice.auth.session import COOKIE
from sluice.auth.tokens import mint
from sluice.dashboard.login import safe_next
from sluice.main import create_app
from tests.api.conftest import SECRET, api_settings  # noqa: F401 - a fixture used here


@pytest.fixture
def https_client(api_settings):  # noqa: F811
    """The app as reached over https (as behind a TLS proxy that says so)."""
    with TestClient(app=create_app(api_settings), base_url="https://sluice.example") as client:
        yield client


def _token(role: Role = Role.viewer, **claims) -> str:
    return mint(SECRET, role, ttl=timedelta(hours=1), **claims)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/runs/7?x=1", "/runs/7?x=1"),
        ("/", "/"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/\n/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("runs", "/"),
    ],
)
def test_sign_in_only_sends_you_somewhere_on_this_site(target, expected):
    assert safe_next(target) == expected


def test_the_login_link_sets_a_secure_cookie_over_https_and_redirects(https_client):
    answer = https_client.get(
        "/login", params={"token": _token(), "next": "/dlq"}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/dlq"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "max-age", "path", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower()
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 3500 < max_age <= 3600  # as long as the token lives
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_refused_sign_ins_set_no_cookie(https_client):
    forged = mint("another-secret-that-is-long-enough-for-hs256", Role.admin)
    bad = https_client.get("/login", params={"token": forged})
    assert bad.status_code == 401 and "not accepted" in bad.text
    roleless = https_client.get("/login", params={"token": _token(roles=[])})
    assert roleless.status_code == 403 and "names no role" in roleless.text
    cross_site = https_client.post(
        "/login",
        data={"token": _token()},
        headers={"Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert cross_site.status_code == 403
    for answer in (bad, roleless, cross_site):
        assert "set-cookie" not in answer.headers
    same_site = https_client.post(
        "/login",
        data={"token": _token()},
        headers={"Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert same_site.status_code == 303 and COOKIE in same_site.headers["set-cookie"]


def test_pages_redirect_to_sign_in_and_carry_a_strict_csp(https_client):
    page = https_client.get("/runs/3", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/runs/3"
    login = https_client.get("/login")
    script = https_client.get("/static/js/api.js")
    assert login.status_code == 200 and script.status_code == 200
    for answer in (login, script):
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
    https_client.cookies.set(COOKIE, _token())
    overview = https_client.get("/")
    assert overview.status_code == 200 and 'name="csrf-token" content="' in overview.text
    assert "<script>" not in overview.text  # scripts are files, never inline
