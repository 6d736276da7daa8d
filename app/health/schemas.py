"""Response bodies of /health and /ready."""

from __future__ import annotations

from msgspec import Struct


class Health(Struct):
    status: str


class Readiness(Struct):
    status: str
    schema_revision: str | None
    expected_revision: str
    problem: str | None = None
    # The LISTEN/NOTIFY self-test (ok, checking, not delivered, failed); not
    # delivered still answers 200: workers poll instead, slower but correct.
    notifications: str = "unchecked"
    warning: str | None = None
