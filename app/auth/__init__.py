"""Authentication (JWT bearer tokens) and authorisation (roles, tenants)."""

from app.auth.guards import (
    ADMIN,
    OPERATOR,
    SUBMITTER,
    VIEWER,
    require_shell_permission,
    requires,
)
from app.auth.jwt import jwt_auth
from app.auth.principal import Principal, Role

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
