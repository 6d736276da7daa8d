"""Authentication (JWT bearer tokens) and authorisation (roles, tenants)."""

from app.auth.guards import ADMIN, OPERATOR, SUBMITTER, VIEWER, requires
from app.auth.jwt import jwt_auth
from app.auth.principal import Principal, Role

__all__ = ["ADMIN", "OPERATOR", "SUBMITTER", "VIEWER", "Principal", "Role", "jwt_auth", "requires"]
