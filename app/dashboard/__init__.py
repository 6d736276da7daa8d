"""The dashboard, served at `/` by the API process: pages, their scripts and
styles (all served from here: no CDN, no build step), sign-in and sign-out.
The router is all `sluice.main` needs."""

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.static_files import create_static_files_router

from sluice.dashboard.headers import SecurityHeadersMiddleware
from sluice.dashboard.login import login_page, login_submit, logout, refused, to_login
from sluice.dashboard.pages import PAGES
from sluice.dashboard.render import STATIC

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
    middleware=[SecurityHeadersMiddleware],
)
