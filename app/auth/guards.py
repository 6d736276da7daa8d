"""Route guards: the least role an operation needs (403 when the token's is lower)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from sluice.auth.principal import Principal, Role


def requires(role: Role) -> Guard:
    """A guard letting through tokens whose role is `role` or higher."""

    # Async although it awaits nothing: Litestar runs a sync guard in a worker
    # thread, a thread hop on every request for a comparison.
    async def guard(
        connection: ASGIConnection[Any, Principal, Any, Any], _: BaseRouteHandler
    ) -> None:
        if not connection.user.allows(role):
            raise PermissionDeniedException(f"This needs the {role.name} role.")

    guard.__name__ = f"requires_{role.name}"
    return guard


VIEWER = [requires(Role.viewer)]
SUBMITTER = [requires(Role.submitter)]
OPERATOR = [requires(Role.operator)]
ADMIN = [requires(Role.admin)]


def require_shell_permission(tasks: Iterable[str], principal: Principal) -> None:
    """403 unless the caller is an admin or none of `tasks` is a shell task: a
    shell task runs whatever command its submitter names."""
    if not principal.is_admin and "shell" in tasks:
        raise PermissionDeniedException("shell tasks need the admin role")
