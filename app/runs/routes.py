"""/api/v1/runs: start a run of an inline definition, list, get (nodes and graph),
its layout for drawing, a node's result, cancel, retry failed nodes, rerun from a
node, signal a waiting node; and POST /api/v1/dags/{name}/runs (a run of a stored
DAG) and /backfill (the runs its cron schedule would have started)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from litestar import Controller, Response, Router, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from sluice.auth import OPERATOR, SUBMITTER, VIEWER
from sluice.core.engine import NodeResult, Run, RunNode
from sluice.core.jobs import DAG_NAME, RunState
from sluice.core.waiting import RUN_ENDED
from sluice.http.bodies import YamlRequest
from sluice.http.deps import Caller, Catalog, Conn, ReadConn
from sluice.http.errors import error_responses
from sluice.http.openapi import example_body
from sluice.http.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.http.shapes import DagNamePath, IdPath, NodePath
from sluice.http.waiting import WaitParam, wait_seconds, waiting
from sluice.runs import service
from sluice.runs.layout import layout
from sluice.runs.schemas import (
    BackfillIn,
    BackfillOut,
    RerunIn,
    RunGraph,
    RunLayout,
    RunStart,
    RunSubmit,
    SignalIn,
)

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
        dependency, duplicate id, the cycle's path, malformed task name, bad duration, payload that
        does not fit its task), then create the run's jobs and edges in one transaction."""
        run, created = await service.submit(conn, principal, data, catalog)
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
        read_conn: ReadConn,
        principal: Caller,
        run_state: Annotated[RunState | None, QueryParameter(name="state")] = None,
        dag: Annotated[
            str | None, QueryParameter(max_length=DAG_NAME.max_length, description="DAG name.")
        ] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Page[Run]:
        """Runs of the caller's tenant, newest first."""
        runs = await service.list_runs(
            read_conn,
            principal,
            state=run_state,
            dag_name=dag,
            before_id=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page(runs, limit)

    @get(
        "/{run_id:int}",
        operation_id="run_get",
        summary="Get a run with its nodes and graph",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def show(
        self, run_id: IdPath, state: State, principal: Caller, wait: WaitParam = None
    ) -> RunGraph:
        """The run, every node's state (what a waiting node waits for, the start of its
        result, a mapped node's elements per state), and the edges between nodes (parent
        -> child). With `wait`, answered once the run has ended or the wait is over (a
        long-poll)."""
        seconds = wait_seconds(wait)
        waits = waiting(state)
        async with waits.connection() as conn:
            run = await service.get_run(conn, principal, run_id)
            if seconds and run.state not in RUN_ENDED:
                nodes = None
            else:
                nodes, edges = await service.graph(conn, run_id)
        if nodes is None:
            async with waits.slot() as hub:  # no pooled connection held meanwhile
                await hub.run(run_id, seconds)
            async with waits.connection() as conn:
                run = await service.get_run(conn, principal, run_id)
                nodes, edges = await service.graph(conn, run_id)
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
        await service.get_run(conn, principal, run_id)
        nodes, edges = await service.graph(conn, run_id)
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
        """Cancel every unfinished node; the run ends `cancelled` (a queued run at once)."""
        return await service.cancel(conn, principal, run_id)

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
        return await service.retry(conn, principal, run_id)

    @post(
        "/{run_id:int}/rerun",
        operation_id="run_rerun",
        summary="Rerun a run from a node",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403, 404, 409),
    )
    async def rerun(
        self,
        run_id: IdPath,
        data: Annotated[RerunIn, example_body("from a node", {"from": "transform"})],
        conn: Conn,
        principal: Caller,
    ) -> Run:
        """Run the node and every node below it again, with fresh attempts; the others
        keep their results. Each is decided by its trigger rule as when it first became
        ready; templated payloads are rendered anew and a mapped node maps again. 409
        (naming them) while any of those nodes runs."""
        return await service.rerun(conn, principal, run_id, data.from_)

    @get(
        "/{run_id:int}/nodes/{node:str}/result",
        operation_id="run_node_result",
        summary="Get a node's whole result",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def result(
        self, run_id: IdPath, node: NodePath, conn: Conn, principal: Caller
    ) -> NodeResult:
        """The node's result in full (GET /runs/{run_id} shows its start); a mapped
        node's is the list of its elements' results, in element order."""
        return await service.node_result(conn, principal, run_id, node)

    @post(
        "/{run_id:int}/nodes/{node:str}/signal",
        operation_id="run_node_signal",
        summary="Signal a waiting node",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403, 404, 409, 413),
    )
    async def signal(
        self,
        run_id: IdPath,
        node: NodePath,
        conn: Conn,
        principal: Caller,
        data: Annotated[
            SignalIn | None,
            example_body("an approval", {"payload": {"approved_by": "ann"}}),
        ] = None,
    ) -> RunNode:
        """A node waiting for a signal (`wait: {signal: true}`) succeeds, with `payload`
        as its result, and its children move on. 409 when it is not waiting for one
        (saying what it does instead, or when it timed out)."""
        return await service.signal(conn, principal, run_id, node, (data or SignalIn()).payload)


class DagRunsController(Controller):
    path = "/dags"
    tags = ["dags"]

    @post(
        "/{name:str}/runs",
        operation_id="dag_run_start",
        summary="Start a run of a DAG",
        status_code=201,
        guards=SUBMITTER,
        responses={
            200: ResponseSpec(Run, description="An idempotent replay."),
            **error_responses(403, 404, 409),
        },
    )
    async def start(
        self,
        name: DagNamePath,
        conn: Conn,
        principal: Caller,
        data: Annotated[
            RunStart | None, example_body("with parameters", {"params": {"day": "2024-01-31"}})
        ] = None,
    ) -> Response[Run]:
        """Run the newest version of the DAG with `params` filled into its payloads."""
        run, created = await service.start_dag(conn, principal, name, data or RunStart())
        return Response(run, status_code=201 if created else 200)

    @post(
        "/{name:str}/backfill",
        operation_id="dag_backfill",
        summary="Backfill a DAG's cron schedule",
        status_code=201,
        guards=OPERATOR,
        responses=error_responses(403, 404),
    )
    async def backfill(
        self,
        name: DagNamePath,
        conn: Conn,
        principal: Caller,
        data: Annotated[
            BackfillIn,
            example_body("a week", {"from": "2026-11-01T00:00:00Z", "to": "2026-11-07T23:59:59Z"}),
        ],
    ) -> BackfillOut:
        """Start a run for each occurrence of the DAG's cron schedule from `from` to `to`
        (at most 1,000), oldest first, with `{{ run.occurrence }}` set; an occurrence the
        scheduler (or an earlier backfill) started already is listed under `existing`, not
        started twice. The DAG's `concurrency` applies: extra runs queue."""
        return await service.backfill(conn, principal, name, data)


router = Router(
    path="/", route_handlers=[RunsController, DagRunsController], request_class=YamlRequest
)
