"""Authentication (JWT bearer tokens) and authorisation (roles, tenants)."""

from sluice.auth.guards import (
    ADMIN,
    OPERATOR,
    SUBMITTER,
    VIEWER,
    require_shell_permission,
    requires,
)
from sluice.auth.jwt import jwt_auth
from sluice.auth.principal import Principal, Role

__all__ = [
    "ADMIN",
    "OPERATOR",
    "SUBMITTER",
    "VIEWER",
    "Principal",
    "Role",
    "jwt_auth",
    "require_shell_permission",
    "requires",
]
