"""The runs area's rules: starting runs (of an inline definition or of a stored DAG's
newest version, or a backfill of its cron schedule), reading them with their graph and
results, cancelling, retrying and rerunning them, and signalling their waiting nodes."""

from __future__ import annotations

import hashlib
from datetime import UTC, timedelta
from itertools import islice, takewhile
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg import errors as pg

from sluice.auth import Principal, require_shell_permission
from sluice.core import engine
from sluice.core.definitions import DefinitionError, check_all
from sluice.core.engine import NodeResult, Run, RunEdge, RunNode
from sluice.core.occurrences import UnusableSchedule
from sluice.core.occurrences import occurrences as occurrences_after
from sluice.core.tasks import TaskCatalog
from sluice.http.errors import FieldError, Refusal, found, invalid
from sluice.http.redact import redact
from sluice.http.shapes import notify_json
from sluice.runs.schemas import BackfillIn, BackfillOut, RunStart, RunSubmit

# Most runs one backfill starts.
BACKFILL_MAX = 1000


async def submit(
    conn: AsyncConnection, principal: Principal, request: RunSubmit, catalog: TaskCatalog
) -> tuple[Run, bool]:
    """Check an inline definition (every problem at once, each with its place), then start
    its run: (run, created)."""
    try:
        definition = await check_all(conn, request.definition, catalog, "definition")
    except DefinitionError as exc:
        raise invalid(exc.problems) from None
    return await _start(conn, principal, request, definition)


async def start_dag(
    conn: AsyncConnection, principal: Principal, name: str, request: RunStart
) -> tuple[Run, bool]:
    """Start a run of the newest version of the caller's DAG `name`: (run, created)."""
    dag = found(
        await engine.dag_get(conn, tenant=principal.tenant, name=name, version=None),
        f"DAG {name!r}",
    )
    return await _start(
        conn, principal, request, dag.definition, dag_name=name, dag_version=dag.version
    )


async def _start(
    conn: AsyncConnection,
    principal: Principal,
    request: RunStart,
    definition: dict[str, Any],
    *,
    dag_name: str | None = None,
    dag_version: int | None = None,
) -> tuple[Run, bool]:
    """Create the run of a normalised definition in the caller's tenant: (run, created).
    A template naming a parameter the run lacks is a 422 on `params` (the database
    renders them; constraint template_renders)."""
    require_shell_permission((node["task"] for node in definition["nodes"]), principal)
    fingerprint = None
    if request.idempotency_key is not None:
        digest = msgspec.json.encode([request, dag_name, definition["nodes"]], order="sorted")
        fingerprint = hashlib.sha256(digest).hexdigest()
    async with conn.transaction():
        submitted = await engine.dag_run_submit(
            conn,
            tenant=principal.tenant,
            definition=definition,
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
    """Cancel every unfinished node (a queued run simply ends); 409 when the run has ended."""
    run = await get_run(conn, principal, run_id)
    if run.state not in ("queued", "running"):
        raise Refusal(409, f"run {run_id} is already {run.state}")
    await engine.dag_run_cancel(conn, id=run_id)
    return await get_run(conn, principal, run_id)


async def retry(conn: AsyncConnection, principal: Principal, run_id: int) -> Run:
    """Retry the failed (and hand-cancelled) nodes; 409 when there are none."""
    await get_run(conn, principal, run_id)
    if not await engine.dag_run_retry(conn, id=run_id):
        raise Refusal(409, f"run {run_id} has no failed or cancelled nodes to retry")
    return await get_run(conn, principal, run_id)


async def rerun(conn: AsyncConnection, principal: Principal, run_id: int, node: str) -> Run:
    """Run `node` and everything below it again; 404 for an unknown node, 409 while
    any of them runs (or a parent of them outside has not finished)."""
    await get_run(conn, principal, run_id)
    try:
        async with conn.transaction():
            await engine.dag_run_rerun(conn, id=run_id, node=node)
    except pg.NoDataFound:
        raise Refusal(
            404, f"run {run_id} has no node {node!r}", [FieldError("from", "no such node")]
        ) from None
    except pg.ObjectInUse as exc:
        raise Refusal(409, exc.diag.message_primary or str(exc)) from None
    return await get_run(conn, principal, run_id)


async def node(conn: AsyncConnection, principal: Principal, run_id: int, node_id: str) -> RunNode:
    """One node of a run the caller may see, or a 404."""
    await get_run(conn, principal, run_id)
    return found(
        await engine.dag_run_node(conn, id=run_id, node=node_id),
        f"node {node_id!r} of run {run_id}",
    )


async def node_result(
    conn: AsyncConnection, principal: Principal, run_id: int, node_id: str
) -> NodeResult:
    """A node's whole result (secrets are not masked: results are the handler's data)."""
    await get_run(conn, principal, run_id)
    return found(
        await engine.dag_run_node_result(conn, id=run_id, node=node_id),
        f"node {node_id!r} of run {run_id}",
    )


async def signal(
    conn: AsyncConnection, principal: Principal, run_id: int, node_id: str, payload: Any
) -> RunNode:
    """Deliver a signal: the node, waiting for one, succeeds with `payload` as its
    result. 404 for an unknown run or node; 409 when the node is not waiting for a
    signal (saying what it is doing instead, or when it timed out); 413 for a payload
    over sluice.max_result_bytes."""
    await node(conn, principal, run_id, node_id)
    async with conn.transaction():
        signalled = await engine.dag_run_signal(conn, id=run_id, node=node_id, payload=payload)
    after = await node(conn, principal, run_id, node_id)
    if signalled:
        return after
    if after.state == "waiting" and after.waiting_for == "signal":
        when = after.wakes_at.isoformat() if after.wakes_at else "its deadline"
        why = f"timed out at {when}"
    elif after.reason == "wait_timeout":
        why = f"timed out ({after.state})"
    elif after.state == "waiting":
        why = f"is waiting for {'its map elements' if after.waiting_for == 'map' else 'a duration'}"
    else:
        why = f"is {after.state}"
    raise Refusal(
        409,
        f"node {node_id!r} of run {run_id} {why}, not waiting for a signal",
        [FieldError("node", "not waiting for a signal")],
    )


async def backfill(
    conn: AsyncConnection, principal: Principal, name: str, request: BackfillIn
) -> BackfillOut:
    """Start the runs of the DAG's cron schedule for its occurrences from `from` to
    `to` (at most BACKFILL_MAX), oldest first, each keyed as the scheduler keys it
    (a run the scheduler started is found, not doubled). 404 for an unknown DAG; 422
    when no schedule (or, without `schedule`, more than one) starts it, or for an
    empty or too long range."""
    found(
        await engine.dag_get(conn, tenant=principal.tenant, name=name, version=None),
        f"DAG {name!r}",
    )
    schedules = [
        s
        for s in await engine.schedule_list(
            conn, tenant=principal.tenant, after_id=None, limit=BACKFILL_MAX
        )
        if s.dag == name and (request.schedule is None or s.name == request.schedule)
    ]
    if len(schedules) != 1:
        problem = (
            f"no schedule {request.schedule!r} starts DAG {name!r}"
            if request.schedule is not None
            else f"no schedule starts DAG {name!r}"
            if not schedules
            else "several schedules start this DAG: name one ("
            + ", ".join(s.name for s in schedules)
            + ")"
        )
        raise invalid([("schedule", problem)])
    schedule = schedules[0]
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (request.from_, request.to))
    if start > end:
        raise invalid([("from", "must not be after `to`")])
    # Occurrences at or after `from`, by the scheduler's own rule.
    try:
        times = occurrences_after(
            schedule.cron, schedule.timezone, start - timedelta(microseconds=1)
        )
    except UnusableSchedule as exc:
        raise Refusal(409, f"schedule {schedule.id}: {exc.reason} ({exc.detail})") from None
    occurrences = list(islice(takewhile(lambda at: at <= end, times), BACKFILL_MAX + 1))
    if not occurrences:
        raise invalid(
            [("to", f"the schedule has no occurrence from {request.from_} to {request.to}")]
        )
    if len(occurrences) > BACKFILL_MAX:
        raise invalid([("to", f"more than {BACKFILL_MAX} occurrences: backfill a shorter range")])
    async with conn.transaction():
        runs = await engine.dag_run_backfill(
            conn, schedule_id=schedule.id, occurrences=occurrences, params=request.params
        )
    return BackfillOut(
        runs=[r.run_id for r in runs if r.created],
        existing=[r.run_id for r in runs if not r.created],
    )
