"""Signing in and out of the dashboard.

A token is pasted into the form, or arrives in the link `sluice up` prints
(`/login?token=...`). Either way it is verified exactly as the API verifies
every request, kept in the HttpOnly session cookie, and the browser is
redirected, so the token leaves the address bar and the history.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import Body, QueryParameter
from litestar.response import Redirect

from sluice.auth.jwt import sign_in
from sluice.auth.session import cleared_session_cookie, session_cookie
from sluice.dashboard.render import render
from sluice.http.deps import Settings
from sluice.http.settings import ApiSettings

# The sign-in answers carry the token (in the URL or the cookie): never cached,
# never sent on as a Referer.
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
MAX_TOKEN = 16_384


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site.
    (Browsers read `/\\host` and `/<tab>/host` as `//host`, another site.)"""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target)
    ):
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


def _secure(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


def _form(next_path: str, error: str | None = None, status_code: int = 200) -> Response[str]:
    response = render("login.html", next=safe_next(next_path), error=error, status_code=status_code)
    response.headers.update(PRIVATE)
    return response


async def _sign_in(
    request: Request[Any, Any, Any], settings: ApiSettings, token: str, next_path: str | None
) -> Response[Any]:
    token = token.strip()
    if not token or len(token) > MAX_TOKEN:
        return _form(next_path or "/", "Paste a token (from `sluice token`).", 400)
    try:
        principal, verified = await sign_in(settings, token, request)
    except NotAuthorizedException as exc:
        return _form(next_path or "/", f"This token was not accepted: {exc.detail}", 401)
    if principal.role is None:
        return _form(next_path or "/", "This token names no role (viewer, submitter...).", 403)
    cookie = session_cookie(token, verified.exp.timestamp(), secure=_secure(request))
    return Redirect(safe_next(next_path), status_code=303, cookies=[cookie], headers=PRIVATE)


@get("/login", exclude_from_auth=True)
async def login_page(
    request: Request[Any, Any, Any],
    settings: Settings,
    token: Annotated[str | None, QueryParameter(max_length=MAX_TOKEN)] = None,
    next_path: Annotated[str | None, QueryParameter(name="next", max_length=2000)] = None,
) -> Response[Any]:
    """The sign-in form; with `?token=` (the link `sluice up` prints), sign in at once."""
    if token is None:
        return _form(next_path or "/")
    return await _sign_in(request, settings, token, next_path)


@post("/login", exclude_from_auth=True, status_code=303)
async def login_submit(
    request: Request[Any, Any, Any],
    settings: Settings,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """The pasted token. Posts from other sites are refused: they would sign the
    browser in with someone else's token (login CSRF)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return _form(data.get("next", "/"), "Sign in from this site's own form.", 403)
    return await _sign_in(request, settings, data.get("token", ""), data.get("next"))


@post("/logout", status_code=204)
async def logout(request: Request[Any, Any, Any]) -> Response[None]:
    """Forget the session. Authenticated like any write, so its CSRF token is checked."""
    return Response(
        None, status_code=204, cookies=[cleared_session_cookie(secure=_secure(request))]
    )


def refused(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[Any]:
    """A token whose role may not read: say so, and offer to sign in with another."""
    return _form(request.url.path, f"Signed in, but {exc.detail}", 403)


def to_login(request: Request[Any, Any, Any], _: NotAuthorizedException) -> Response[Any]:
    """A page asked for without a valid session: sign in, then come back here."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(
        f"/login?next={quote(target, safe='/')}",
        status_code=303,
        cookies=[cleared_session_cookie(secure=_secure(request))],
    )
