"""/api/v1/dags: save (a new version per change), list, get, delete, start a run."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Response, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from psycopg.types.json import Jsonb

from sluice.auth import OPERATOR, SUBMITTER, VIEWER
from sluice.core.queries import Q
from sluice.dags.definition import DefinitionError, check
from sluice.dags.schemas import Dag, DagDefinitionIn
from sluice.deps import Caller, Catalog, Conn
from sluice.errors import error_responses, invalid, not_found
from sluice.openapi import example_body
from sluice.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.redact import redact
from sluice.resources import NamePath
from sluice.runs.schemas import Run, RunStart
from sluice.runs.start import start_run

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


def _to_dag(row: dict) -> Dag:
    definition = {**row["definition"], "nodes": redact(row["definition"].get("nodes", []))}
    return msgspec.convert(
        {**row, "definition": definition, "versions": row.get("versions") or []}, Dag
    )


async def _latest(conn: Conn, principal: Caller, name: str, version: int | None = None) -> dict:
    row = await Q.dag_get(conn, tenant=principal.tenant, name=name, version=version)
    if row is None:
        raise not_found(f"DAG {name!r}" + (f" version {version}" if version else ""))
    return row


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
        name: NamePath,
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
        raw = msgspec.to_builtins(data)
        if raw.get("description") is None:
            raw.pop("description", None)
        try:
            nodes = check(raw, catalog)
        except DefinitionError as exc:
            raise invalid(exc.problems) from None
        definition = {"nodes": nodes}
        if data.description:
            definition["description"] = data.description
        async with conn.transaction():
            saved = await Q.dag_save(
                conn,
                tenant=principal.tenant,
                name=name,
                definition=Jsonb(definition),
                created_by=principal.subject,
            )
        dag = _to_dag(await _latest(conn, principal, name, saved["version"]))
        return Response(dag, status_code=201 if saved["created"] else 200)

    @get(
        "/",
        operation_id="dag_list",
        summary="List DAGs",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_dags(
        self, conn: Conn, principal: Caller, limit: Limit = 100, cursor: Cursor = None
    ) -> Page[Dag]:
        """The newest version of each of the tenant's DAGs, by name."""
        after_name, after_tenant = decode_cursor(cursor, tuple[str, str]) or (None, None)
        rows = await Q.dag_list(
            conn,
            tenant=principal.scope,
            after_name=after_name,
            after_tenant=after_tenant,
            limit=limit + 1,
        )
        return page([_to_dag(r) for r in rows], limit, key=("name", "tenant"))

    @get(
        "/{name:str}",
        operation_id="dag_get",
        summary="Get a DAG",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def show(
        self,
        name: NamePath,
        conn: Conn,
        principal: Caller,
        version: Annotated[
            int | None, QueryParameter(ge=1, le=2**31 - 1, description="Default: the newest.")
        ] = None,
    ) -> Dag:
        """One version of the DAG (the newest by default) and the list of its versions."""
        return _to_dag(await _latest(conn, principal, name, version))

    @delete(
        "/{name:str}",
        operation_id="dag_delete",
        summary="Delete a DAG",
        guards=OPERATOR,
        responses=error_responses(403, 404),
    )
    async def remove(self, name: NamePath, conn: Conn, principal: Caller) -> None:
        """Delete every version. Runs keep the name and version they ran."""
        if not await Q.dag_delete(conn, tenant=principal.tenant, name=name):
            raise not_found(f"DAG {name!r}")

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
        name: NamePath,
        conn: Conn,
        principal: Caller,
        data: Annotated[
            RunStart | None, example_body("with parameters", {"params": {"day": "2024-01-31"}})
        ] = None,
    ) -> Response[Run]:
        """Run the newest version of the DAG with `params` filled into its payloads."""
        dag = await _latest(conn, principal, name)
        run, created = await start_run(
            conn,
            principal,
            data or RunStart(),
            dag["definition"]["nodes"],
            dag_name=name,
            dag_version=dag["version"],
        )
        return Response(run, status_code=201 if created else 200)
