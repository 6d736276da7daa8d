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
