"""/api/v1/dags: save (a new version per change), list, get, delete. (Starting a run
of a DAG, POST /api/v1/dags/{name}/runs, is in sluice.runs.routes.)"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, Router, delete, get, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from sluice.auth import OPERATOR, SUBMITTER, VIEWER
from sluice.core.engine import Dag
from sluice.dags import service
from sluice.dags.schemas import DagDefinitionIn
from sluice.http.bodies import YamlRequest
from sluice.http.deps import Caller, Catalog, Conn, ReadConn
from sluice.http.errors import error_responses
from sluice.http.openapi import example_body
from sluice.http.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.http.shapes import DagNamePath

ETL = {
    "description": "Nightly export",
    "nodes": [
        {
            "id": "extract",
            "http": {"url": "https://example.com/export?day={{ params.day }}"},
            "retry": {"max_attempts": 5, "base": "10s", "max": "10m"},
            "timeout": "5m",
        },
        {"id": "wait", "task": "sleep", "payload": {"seconds": 30}, "depends_on": ["extract"]},
        {
            "id": "report",
            "task": "email",
            "depends_on": ["wait"],
            "payload": {
                "to": ["team@example.com"],
                "subject": "Export done",
                "body": "See the bucket.",
            },
        },
    ],
}


class DagsController(Controller):
    path = "/dags"
    tags = ["dags"]

    @put(
        "/{name:str}",
        operation_id="dag_save",
        summary="Create or update a DAG",
        status_code=201,
        guards=SUBMITTER,
        opt={"large_body": True},
        responses={
            200: ResponseSpec(
                Dag, description="Unchanged: the definition equals the newest version."
            ),
            **error_responses(403),
        },
    )
    async def save(
        self,
        name: DagNamePath,
        data: Annotated[
            DagDefinitionIn,
            example_body(
                "an export chain", ETL, "JSON, or YAML with Content-Type application/yaml."
            ),
        ],
        conn: Conn,
        principal: Caller,
        catalog: Catalog,
    ) -> Response[Dag]:
        """Validate the definition (every problem at once, each with its place), then store
        it as the DAG's next version; runs record the version they ran. 200 when it equals
        the newest version."""
        dag, created = await service.save(conn, principal, name, data, catalog)
        return Response(dag, status_code=201 if created else 200)

    @get(
        "/",
        operation_id="dag_list",
        summary="List DAGs",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_dags(
        self, read_conn: ReadConn, principal: Caller, limit: Limit = 100, cursor: Cursor = None
    ) -> Page[Dag]:
        """The newest version of each of the tenant's DAGs, by name."""
        after = decode_cursor(cursor, tuple[str, str])
        dags = await service.list_dags(read_conn, principal, after, limit + 1)
        return page(dags, limit, key=("name", "tenant"))

    @get(
        "/{name:str}",
        operation_id="dag_get",
        summary="Get a DAG",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def show(
        self,
        name: DagNamePath,
        conn: Conn,
        principal: Caller,
        version: Annotated[
            int | None, QueryParameter(ge=1, le=2**31 - 1, description="Default: the newest.")
        ] = None,
    ) -> Dag:
        """One version of the DAG (the newest by default) and the list of its versions."""
        return await service.get_dag(conn, principal, name, version)

    @delete(
        "/{name:str}",
        operation_id="dag_delete",
        summary="Delete a DAG",
        guards=OPERATOR,
        responses=error_responses(403, 404),
    )
    async def remove(self, name: DagNamePath, conn: Conn, principal: Caller) -> None:
        """Delete every version. Runs keep the name and version they ran."""
        await service.delete(conn, principal, name)


router = Router(path="/", route_handlers=[DagsController], request_class=YamlRequest)
