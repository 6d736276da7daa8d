"""Starting runs, from an inline definition or a stored DAG's version."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from sluice.auth import Principal, require_shell_permission
from sluice.core.queries import Q
from sluice.errors import ApiError, FieldError, not_found
from sluice.redact import redact
from sluice.resources import notify_json
from sluice.runs.schemas import Run, RunStart


async def start_run(
    conn: AsyncConnection,
    principal: Principal,
    request: RunStart,
    nodes: list[dict],
    *,
    dag_name: str | None = None,
    dag_version: int | None = None,
) -> tuple[Run, bool]:
    """Create the run of normalised `nodes` in the caller's tenant: (run, created)."""
    require_shell_permission((node["task"] for node in nodes), principal)
    fingerprint = None
    if request.idempotency_key is not None:
        digest = msgspec.json.encode([request, dag_name, nodes], order="sorted")
        fingerprint = hashlib.sha256(digest).hexdigest()
    async with conn.transaction():
        row = await Q.dag_run_submit(
            conn,
            tenant=principal.tenant,
            definition=Jsonb({"nodes": nodes}),
            params=Jsonb(request.params),
            dag_name=dag_name,
            dag_version=dag_version,
            notify=Jsonb(notify_json(request.notify)) if request.notify else None,
            idempotency_key=request.idempotency_key,
            fingerprint=fingerprint,
        )
    if not row["created"] and row["request_fingerprint"] not in (None, fingerprint):
        raise ApiError(
            409,
            "The idempotency key was used before for a different run.",
            [FieldError("idempotency_key", "was used before for a different request")],
        )
    return await get_run(conn, principal, row["run_id"]), row["created"]


def to_run(row: dict[str, Any]) -> Run:
    return msgspec.convert(
        {**row, "notify": redact(row["notify"]), "params": redact(row["params"])}, Run
    )


async def get_run(conn: AsyncConnection, principal: Principal, run_id: int) -> Run:
    row = await Q.dag_run_get(conn, id=run_id, tenant=principal.scope)
    if row is None:
        raise not_found(f"run {run_id}")
    return to_run(row)
