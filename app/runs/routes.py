"""/api/v1/runs: start a run of an inline definition, list, get (nodes and graph),
its layout for drawing, cancel, retry failed nodes."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from sluice.auth import OPERATOR, SUBMITTER, VIEWER
from sluice.core.queries import Q
from sluice.dags.definition import DefinitionError, check
from sluice.deps import Caller, Catalog, Conn
from sluice.errors import ApiError, error_responses, invalid
from sluice.openapi import example_body
from sluice.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.resources import IdPath, RunState
from sluice.runs.layout import layout
from sluice.runs.schemas import Run, RunEdge, RunGraph, RunLayout, RunNode, RunSubmit
from sluice.runs.start import get_run, start_run, to_run

INLINE_RUN = {
    "definition": {
        "nodes": [
            {
                "id": "extract",
                "task": "http",
                "payload": {"url": "https://example.com/data"},
                "timeout": "30s",
            },
            {
                "id": "transform",
                "task": "sleep",
                "payload": {"seconds": 1},
                "depends_on": ["extract"],
                "retry": {"max_attempts": 3, "base": "5s"},
            },
            {"id": "load", "task": "noop", "depends_on": ["transform"]},
        ]
    },
    "params": {"day": "2024-01-31"},
    "notify": {"email": {"to": ["ops@example.com"], "on": ["failed"]}},
}


async def _graph(conn: Conn, run_id: int) -> tuple[list[RunNode], list[RunEdge]]:
    nodes = await Q.dag_run_nodes(conn, id=run_id)
    edges = await Q.dag_run_edges(conn, id=run_id)
    return msgspec.convert(nodes, list[RunNode]), msgspec.convert(edges, list[RunEdge])


class RunsController(Controller):
    path = "/runs"
    tags = ["runs"]

    @post(
        "/",
        operation_id="run_submit",
        summary="Start a run of an inline definition",
        status_code=201,
        guards=SUBMITTER,
        opt={"large_body": True},
        responses={
            200: ResponseSpec(
                Run, description="An idempotent replay: the run the key started before."
            ),
            **error_responses(403, 409),
        },
    )
    async def submit(
        self,
        data: Annotated[
            RunSubmit,
            example_body(
                "an ETL chain", INLINE_RUN, "JSON, or YAML with Content-Type application/yaml."
            ),
        ],
        conn: Conn,
        principal: Caller,
        catalog: Catalog,
    ) -> Response[Run]:
        """Validate the definition (every problem at once, each with its place: unknown
        dependency, duplicate id, the cycle's path, unknown task, bad duration, payload that
        does not fit its task), then create the run's jobs and edges in one transaction."""
        try:
            nodes = check(data.definition, catalog, "definition")
        except DefinitionError as exc:
            raise invalid(exc.problems) from None
        run, created = await start_run(conn, principal, data, nodes)
        return Response(run, status_code=201 if created else 200)

    @get(
        "/",
        operation_id="run_list",
        summary="List runs",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_runs(
        self,
        conn: Conn,
        principal: Caller,
        run_state: Annotated[RunState | None, QueryParameter(name="state")] = None,
        dag: Annotated[str | None, QueryParameter(max_length=128, description="DAG name.")] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Page[Run]:
        """Runs of the caller's tenant, newest first."""
        rows = await Q.dag_run_list(
            conn,
            tenant=principal.scope,
            state=run_state,
            dag_name=dag,
            before_id=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page([to_run(r) for r in rows], limit)

    @get(
        "/{run_id:int}",
        operation_id="run_get",
        summary="Get a run with its nodes and graph",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def show(self, run_id: IdPath, conn: Conn, principal: Caller) -> RunGraph:
        """The run, every node's state, and the edges between nodes (parent -> child)."""
        run = await get_run(conn, principal, run_id)
        nodes, edges = await _graph(conn, run_id)
        return RunGraph(run=run, nodes=nodes, edges=edges)

    @get(
        "/{run_id:int}/layout",
        operation_id="run_layout",
        summary="Lay a run's DAG out for drawing",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def draw(self, run_id: IdPath, conn: Conn, principal: Caller) -> RunLayout:
        """Where to draw each node and edge: layers by dependency depth, left to right,
        crossings reduced (a Sugiyama layout). A run's shape never changes, so clients
        fetch this once and follow the states with GET /runs/{run_id}. Runs over 500
        nodes come back with each node's depth only (`drawn: false`)."""
        await get_run(conn, principal, run_id)
        nodes, edges = await _graph(conn, run_id)
        # Up to a few hundred milliseconds of Python for the largest drawn runs.
        return await asyncio.to_thread(layout, run_id, nodes, edges)

    @post(
        "/{run_id:int}/cancel",
        operation_id="run_cancel",
        summary="Cancel a run",
        status_code=200,
        guards=SUBMITTER,
        responses=error_responses(403, 404, 409),
    )
    async def cancel(self, run_id: IdPath, conn: Conn, principal: Caller) -> Run:
        """Cancel every unfinished node; the run ends `cancelled`."""
        run = await get_run(conn, principal, run_id)
        if run.state != "running":
            raise ApiError(409, f"run {run_id} is already {run.state}")
        await Q.dag_run_cancel(conn, id=run_id)
        return await get_run(conn, principal, run_id)

    @post(
        "/{run_id:int}/retry",
        operation_id="run_retry",
        summary="Retry a run's failed nodes",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403, 404, 409),
    )
    async def retry(self, run_id: IdPath, conn: Conn, principal: Caller) -> Run:
        """Retry the failed (and hand-cancelled) nodes; the nodes cancelled because of them
        come back, and the run is running again."""
        await get_run(conn, principal, run_id)
        if not await Q.dag_run_retry(conn, id=run_id):
            raise ApiError(409, f"run {run_id} has no failed or cancelled nodes to retry")
        return await get_run(conn, principal, run_id)
