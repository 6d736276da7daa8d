"""The API accepts the dashboard's session cookie as well as the Bearer header;
writes authenticated by the cookie need the CSRF token, Bearer writes do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.auth.principal import Role
from sluice.auth.session import COOKIE, CSRF_HEADER, csrf_token
from sluice.auth.tokens import mint
from tests.api.conftest import SECRET, bearer

API = "/api/v1"


def session(role: Role = Role.operator, **kwargs) -> tuple[str, str]:
    """A session token and the CSRF token that goes with it."""
    token = mint(SECRET, role, ttl=timedelta(minutes=5), **kwargs)
    return token, csrf_token(SECRET, token)


async def paused(db, queue: str) -> bool:
    cur = await db.execute("SELECT paused FROM sluice.queues WHERE name = %s", (queue,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def test_the_cookie_authenticates_reads(client):
    token, _ = session(Role.viewer, tenant="acme")
    client.cookies.set(COOKIE, token)
    answer = await client.get(f"{API}/jobs")
    assert answer.status_code == 200 and answer.json() == {"items": [], "next_cursor": None}


async def test_a_cookie_write_needs_the_csrf_token(client, db):
    token, csrf = session()
    client.cookies.set(COOKIE, token)
    refused = await client.post(f"{API}/queues/mail/pause")
    assert refused.status_code == 403 and CSRF_HEADER in refused.json()["message"]
    forged = await client.post(f"{API}/queues/mail/pause", headers={CSRF_HEADER: "0" * 64})
    assert forged.status_code == 403
    other_session = session(subject="someone-else")[1]  # nor is another session's
    assert (
        await client.post(f"{API}/queues/mail/pause", headers={CSRF_HEADER: other_session})
    ).status_code == 403
    assert not await paused(db, "mail")

    accepted = await client.post(f"{API}/queues/mail/pause", headers={CSRF_HEADER: csrf})
    assert accepted.status_code == 200 and await paused(db, "mail")


async def test_bearer_writes_need_no_csrf_token_even_beside_a_cookie(client, db):
    token, _ = session(Role.viewer)
    client.cookies.set(COOKIE, token)
    answer = await client.post(f"{API}/queues/mail/pause", headers=bearer(Role.operator))
    assert answer.status_code == 200 and await paused(db, "mail")


async def test_the_header_decides_when_both_are_sent(client):
    token, _ = session(Role.admin)
    client.cookies.set(COOKIE, token)
    bad_header = await client.get(f"{API}/jobs", headers={"Authorization": "Bearer nonsense"})
    assert bad_header.status_code == 401
    viewer_header = await client.post(f"{API}/queues/mail/pause", headers=bearer(Role.viewer))
    assert viewer_header.status_code == 403  # the viewer's header, not the admin's cookie


@pytest.mark.parametrize(
    "cookie",
    [
        "not-a-jwt",
        mint(SECRET, Role.admin, now=datetime.now(UTC) - timedelta(hours=2)),  # expired
        mint("another-secret-that-is-long-enough-for-hs256", Role.admin),
    ],
    ids=["garbage", "expired", "forged"],
)
async def test_a_bad_cookie_is_a_401_before_any_csrf_check(client, cookie):
    client.cookies.set(COOKIE, cookie)
    assert (await client.get(f"{API}/jobs")).status_code == 401
    answer = await client.post(f"{API}/queues/mail/pause")
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"


async def test_no_token_at_all_is_a_401(client):
    answer = await client.get(f"{API}/jobs")
    assert answer.status_code == 401 and "sign in" in answer.json()["message"]
