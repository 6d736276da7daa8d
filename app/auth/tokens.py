"""Minting tokens for local use (`sluice token`, `sluice up`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt

from sluice.auth.principal import Role
from sluice.core.jobs import DEFAULT_TENANT


def mint(
    secret: str,
    role: Role,
    *,
    tenant: str = DEFAULT_TENANT,
    ttl: timedelta = timedelta(hours=1),
    subject: str = "sluice-cli",
    algorithm: str = "HS256",
    now: datetime | None = None,
    **claims: object,
) -> str:
    """An HS256 token for `role` in `tenant`, valid for `ttl`."""
    issued = now or datetime.now(UTC)
    payload = {
        "sub": subject,
        "iat": issued,
        "exp": issued + ttl,
        "roles": [role.name],
        "tenant": tenant,
        **claims,
    }
    return jwt.encode(payload, secret, algorithm=algorithm)
