"""The runs area's rules: starting runs (of an inline definition or of a stored DAG's
newest version), reading them with their graph, cancelling and retrying them."""

from __future__ import annotations

import hashlib

import msgspec
from psycopg import AsyncConnection

from sluice.auth import Principal, require_shell_permission
from sluice.core import engine
from sluice.core.definitions import DefinitionError, check
from sluice.core.engine import Run, RunEdge, RunNode
from sluice.core.tasks import TaskCatalog
from sluice.http.errors import FieldError, Refusal, found, invalid
from sluice.http.redact import redact
from sluice.http.shapes import notify_json
from sluice.runs.schemas import RunStart, RunSubmit


async def submit(
    conn: AsyncConnection, principal: Principal, request: RunSubmit, catalog: TaskCatalog
) -> tuple[Run, bool]:
    """Check an inline definition (every problem at once, each with its place), then start
    its run: (run, created)."""
    try:
        nodes = check(request.definition, catalog, "definition")
    except DefinitionError as exc:
        raise invalid(exc.problems) from None
    return await _start(conn, principal, request, nodes)


async def start_dag(
    conn: AsyncConnection, principal: Principal, name: str, request: RunStart
) -> tuple[Run, bool]:
    """Start a run of the newest version of the caller's DAG `name`: (run, created)."""
    dag = found(
        await engine.dag_get(conn, tenant=principal.tenant, name=name, version=None),
        f"DAG {name!r}",
    )
    return await _start(
        conn, principal, request, dag.definition["nodes"], dag_name=name, dag_version=dag.version
    )


async def _start(
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
        submitted = await engine.dag_run_submit(
            conn,
            tenant=principal.tenant,
            definition={"nodes": nodes},
            params=request.params,
            dag_name=dag_name,
            dag_version=dag_version,
            notify=notify_json(request.notify),
            idempotency_key=request.idempotency_key,
            fingerprint=fingerprint,
        )
    if not submitted.created and submitted.request_fingerprint not in (None, fingerprint):
        raise Refusal(
            409,
            "The idempotency key was used before for a different run.",
            [FieldError("idempotency_key", "was used before for a different request")],
        )
    return await get_run(conn, principal, submitted.run_id), submitted.created


def shown(run: Run) -> Run:
    """The run as the API shows it: secrets in `notify` and `params` masked."""
    return msgspec.structs.replace(run, notify=redact(run.notify), params=redact(run.params))


async def get_run(conn: AsyncConnection, principal: Principal, run_id: int) -> Run:
    """The run if the caller's tenant may see it, else a 404."""
    run = await engine.dag_run_get(conn, id=run_id, tenant=principal.scope)
    return shown(found(run, f"run {run_id}"))


async def list_runs(
    conn: AsyncConnection,
    principal: Principal,
    *,
    state: str | None,
    dag_name: str | None,
    before_id: int | None,
    limit: int,
) -> list[Run]:
    runs = await engine.dag_run_list(
        conn,
        tenant=principal.scope,
        state=state,
        dag_name=dag_name,
        before_id=before_id,
        limit=limit,
    )
    return [shown(run) for run in runs]


async def graph(conn: AsyncConnection, run_id: int) -> tuple[list[RunNode], list[RunEdge]]:
    """A run's nodes (in creation order) and edges (parent -> child)."""
    return await engine.dag_run_nodes(conn, id=run_id), await engine.dag_run_edges(conn, id=run_id)


async def cancel(conn: AsyncConnection, principal: Principal, run_id: int) -> Run:
    """Cancel every unfinished node; 409 when the run has ended."""
    run = await get_run(conn, principal, run_id)
    if run.state != "running":
        raise Refusal(409, f"run {run_id} is already {run.state}")
    await engine.dag_run_cancel(conn, id=run_id)
    return await get_run(conn, principal, run_id)


async def retry(conn: AsyncConnection, principal: Principal, run_id: int) -> Run:
    """Retry the failed (and hand-cancelled) nodes; 409 when there are none."""
    await get_run(conn, principal, run_id)
    if not await engine.dag_run_retry(conn, id=run_id):
        raise Refusal(409, f"run {run_id} has no failed or cancelled nodes to retry")
    return await get_run(conn, principal, run_id)
