"""Rendering the dashboard's pages: Jinja templates, autoescaped, no inline script.

Pages are shells: the data comes from /api/v1, fetched by each page's script
with the session cookie, so the dashboard reads and acts exactly as any API
client with the same token would (roles, tenant scoping, validation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from litestar import Request, Response
from litestar.enums import MediaType

from sluice.auth import Principal, Role
from sluice.core import jobs

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, *, status_code: int = 200, **context: Any) -> Response[str]:
    """The HTML page `template` rendered with `context`."""
    html = _templates.get_template(template).render(**context)
    return Response(html, media_type=MediaType.HTML, status_code=status_code)


def page(request: Request[Principal, Any, Any], template: str, **context: Any) -> Response[str]:
    """A signed-in page: the caller's identity and what it may do, for the header
    and for the scripts (which show only the actions the role allows)."""
    principal = request.user
    return render(
        template,
        principal=principal,
        role=principal.role.name if principal.role else "none",
        can_operate=principal.allows(Role.operator),
        # Set by the auth middleware for cookie sessions; a page fetched with a
        # Bearer header (curl) has none and its buttons would be refused.
        csrf_token=request.state.get("csrf_token", ""),
        # The job states, in the engine's order, for the pages and their scripts
        # (<body data-job-states>): a new state needs no dashboard edit.
        job_states=jobs.JOB_STATES,
        **context,
    )
