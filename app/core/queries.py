"""Named runtime queries, loaded from `sql/queries/*.sql`.

Each query is a block headed by `-- name: <name> <kind>`, where kind says what
calling it returns (after sqlc's conventions):

    :many     a list of dict rows          :one     one dict row, or None
    :scalar   the first column of the first row, or None
    :exec     nothing                      :rows    the number of rows affected

Parameters are psycopg named placeholders, `%(name)s`. Python code calls a
query by name and never holds SQL text of its own:

    from sluice.core.queries import Q
    jobs = await Q.job_claim(conn, worker_id=..., queues=[...], limit=10, lease=...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

# Package data, so the same code reads it from a checkout and from an installed wheel.
SQL_DIR = Path(str(resources.files("sluice.sql")))
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s+:(many|one|scalar|exec|rows)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Query:
    """One named query; call it with a connection and keyword parameters."""

    name: str
    kind: str
    sql: str
    source: str

    async def __call__(self, conn: AsyncConnection[Any], /, **params: Any) -> Any:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self.sql, params or None)
            if self.kind == "many":
                return await cur.fetchall()
            if self.kind == "one":
                return await cur.fetchone()
            if self.kind == "scalar":
                row = await cur.fetchone()
                return None if row is None else next(iter(row.values()))
            if self.kind == "rows":
                return cur.rowcount
            return None


def parse(text: str, source: str) -> dict[str, Query]:
    """Split one .sql file into its named queries."""
    headers = list(_HEADER.finditer(text))
    if not headers and text.strip():
        raise ValueError(f"{source}: no `-- name: <name> :<kind>` header")
    queries: dict[str, Query] = {}
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = text[header.end() : end].strip()
        name, kind = header.group(1), header.group(2)
        if name in queries:
            raise ValueError(f"{source}: query {name} is defined twice")
        queries[name] = Query(name, kind, body, source)
    return queries


class Queries:
    """All named queries, as attributes: `Q.job_claim(conn, ...)`."""

    def __init__(self, directory: Path) -> None:
        self._queries: dict[str, Query] = {}
        for path in sorted(directory.glob("*.sql")):
            for name, query in parse(path.read_text(), path.name).items():
                if name in self._queries:
                    raise ValueError(
                        f"query {name} is defined in both {self._queries[name].source} "
                        f"and {path.name}"
                    )
                self._queries[name] = query

    def __getattr__(self, name: str) -> Query:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name} in sql/queries/") from None

    def __iter__(self):
        return iter(self._queries.values())


Q = Queries(SQL_DIR / "queries")
