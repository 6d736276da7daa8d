"""The DAGs area's rules: a definition is checked completely (sluice.core.definitions)
and stored normalised, as the DAG's next version."""

from __future__ import annotations

import msgspec
from psycopg import AsyncConnection

from sluice.auth import Principal
from sluice.core import engine
from sluice.core.definitions import DefinitionError, check_all
from sluice.core.engine import Dag
from sluice.core.tasks import TaskCatalog
from sluice.dags.schemas import DagDefinitionIn
from sluice.http.errors import found, invalid
from sluice.http.redact import redact


def shown(dag: Dag) -> Dag:
    """The DAG as the API shows it: secrets in its nodes' payloads masked."""
    definition = {**dag.definition, "nodes": redact(dag.definition.get("nodes", []))}
    return msgspec.structs.replace(dag, definition=definition)


async def get_dag(
    conn: AsyncConnection, principal: Principal, name: str, version: int | None = None
) -> Dag:
    """One version of the caller's DAG (the newest by default), or a 404."""
    dag = await engine.dag_get(conn, tenant=principal.tenant, name=name, version=version)
    return shown(found(dag, f"DAG {name!r}" + (f" version {version}" if version else "")))


async def save(
    conn: AsyncConnection,
    principal: Principal,
    name: str,
    data: DagDefinitionIn,
    catalog: TaskCatalog,
) -> tuple[Dag, bool]:
    """Check the definition (every problem at once: its structure, then its templates,
    conditions and maps), then store it as the DAG's next version unless it equals the
    newest: (the version stored, whether it is new)."""
    raw = {k: v for k, v in msgspec.to_builtins(data).items() if v is not None}
    try:
        definition = await check_all(conn, raw, catalog)
    except DefinitionError as exc:
        raise invalid(exc.problems) from None
    async with conn.transaction():
        saved = await engine.dag_save(
            conn,
            tenant=principal.tenant,
            name=name,
            definition=definition,
            created_by=principal.subject,
        )
    return await get_dag(conn, principal, name, saved.version), saved.created


async def list_dags(
    conn: AsyncConnection, principal: Principal, after: tuple[str, str] | None, limit: int
) -> list[Dag]:
    """The newest version of each DAG the caller may see, by (name, tenant)."""
    after_name, after_tenant = after or (None, None)
    dags = await engine.dag_list(
        conn, tenant=principal.scope, after_name=after_name, after_tenant=after_tenant, limit=limit
    )
    return [shown(dag) for dag in dags]


async def delete(conn: AsyncConnection, principal: Principal, name: str) -> None:
    """Delete every version of the caller's DAG, or a 404."""
    if not await engine.dag_delete(conn, tenant=principal.tenant, name=name):
        found(None, f"DAG {name!r}")
