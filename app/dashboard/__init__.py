"""The dashboard, served at `/` by the API process: pages, their scripts and
styles (all served from here: no CDN, no build step), sign-in and sign-out.

Every response carries a Content-Security-Policy that allows scripts, styles
and connections from this origin only and no inline script at all, so markup
that slipped into a job's payload or error could not run even if it escaped
the templates' autoescaping or the scripts' text-only DOM building.
"""

from litestar import Router
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.static_files import create_static_files_router

from app.dashboard.login import login_page, login_submit, logout, refused, to_login
from app.dashboard.pages import PAGES
from app.dashboard.render import STATIC

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

static = create_static_files_router(
    path="/static",
    directories=[STATIC],
    opt={"exclude_from_auth": True},
    # Revalidated on each load (ETag), so a new release's scripts are never stale.
    cache_control=CacheControlHeader(no_cache=True),
    include_in_schema=False,
)

router = Router(
    path="/",
    route_handlers=[*PAGES, login_page, login_submit, logout, static],
    include_in_schema=False,
    exception_handlers={NotAuthorizedException: to_login, PermissionDeniedException: refused},
    response_headers=[
        ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
        ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
        ResponseHeader(name="X-Frame-Options", value="DENY"),
        ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ],
)
