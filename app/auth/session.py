"""The dashboard's session: the API's own JWT, carried in an HttpOnly cookie,
and the CSRF check that writes authenticated by that cookie must pass.

A browser attaches cookies to every request to the site, including requests a
hostile page makes it send (a form posted to /api/v1/dlq/7/retry). So a
state-changing request authenticated by the cookie must also carry the
`X-CSRF-Token` header: an HMAC of the session token that the dashboard puts in
each page it renders. A hostile page can make the browser send the cookie, but
it can read neither the cookie (HttpOnly) nor our pages (same-origin policy),
so it cannot compute the header, and it cannot send a custom header cross-site
without a CORS preflight that the API never answers. SameSite=Strict on the
cookie is a second, independent defence.

Requests with an `Authorization` header are authenticated by that header alone
and never checked for CSRF: a page cannot make a browser add it, and API
clients keep working as before.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTAuthenticationMiddleware, JWTCookieAuthenticationMiddleware

COOKIE = "sluice_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(key: str, session_token: str) -> str:
    """The CSRF token that goes with `session_token` (the cookie's JWT).

    Keyed with the API's verification key, so it is bound both to this
    deployment and to this one session; it reveals nothing about the session
    token, and a new sign-in gets a new one.
    """
    message = b"sluice-csrf:" + session_token.encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


class SessionAuthenticationMiddleware(JWTCookieAuthenticationMiddleware):
    """Litestar's JWT cookie middleware, with the header taking precedence and
    a CSRF check on unsafe requests authenticated by the cookie."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        if self.auth_header in connection.headers:
            # An API client: the header alone decides, whatever cookies it sends.
            scheme, _, _ = connection.headers[self.auth_header].partition(" ")
            if scheme.lower() != "bearer":
                raise NotAuthorizedException(
                    f"The {self.auth_header} header must be `Bearer <JWT>`."
                )
            return await JWTAuthenticationMiddleware.authenticate_request(self, connection)
        session = connection.cookies.get(self.auth_cookie_key)
        if not session:
            raise NotAuthorizedException(
                "No token: send `Authorization: Bearer <JWT>`, or sign in to the dashboard."
            )
        # The token first: an expired session answers 401 (sign in again), not 403.
        result = await self.authenticate_token(session, connection)
        expected = csrf_token(self.token_secret, session)
        if connection.scope["method"] not in SAFE_METHODS:
            sent = connection.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), expected.encode()):
                raise PermissionDeniedException(
                    f"This request is authenticated by the session cookie, so it needs the "
                    f"{CSRF_HEADER} header of the dashboard page that sends it."
                )
        # For the dashboard's pages, which hand it to their scripts.
        connection.state.csrf_token = expected
        return result


def session_cookie(token: str, expires_at: float, *, secure: bool) -> Cookie:
    """The cookie that keeps `token` (whose `exp` is `expires_at`) for the dashboard."""
    return Cookie(
        key=COOKIE,
        value=token,
        path="/",
        max_age=max(int(expires_at - time.time()), 0),
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def cleared_session_cookie(*, secure: bool) -> Cookie:
    """A cookie that makes the browser forget the session (sign-out)."""
    return Cookie(
        key=COOKIE, value="", path="/", max_age=0, httponly=True, samesite="strict", secure=secure
    )
