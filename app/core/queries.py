"""Named runtime queries, loaded from `sql/queries/*.sql`, and the registry of the
typed functions that run them.

Each query is a block headed by `-- name: <name> <kind>`, where kind says what
its typed function answers (after sqlc's conventions):

    :many     rows                 :one     one row, or None
    :scalar   one value, or None   :exec    nothing         :rows   rows affected
    :copy     a COPY ... FROM STDIN its function feeds (no parameters; `{columns}`
              stands for the optional columns it names from a fixed list)

Parameters are psycopg named placeholders, `%(name)s`. Nothing outside the two
typed doors runs a query by name: the API's is `sluice.core.engine`, the worker
protocol's (claim to completion, maintenance, the worker registry, LISTEN and the
connection checks) is `sluice.core.protocol`. Each function there is marked with
`@door(name)`; tests/api/test_engine_door.py pairs every query here with its
function, its parameters and its result columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from msgspec import Struct

# Package data, so the same code reads it from a checkout and from an installed wheel.
SQL_DIR = Path(str(resources.files("sluice.sql")))
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s+:(many|one|scalar|exec|rows|copy)\s*$", re.MULTILINE)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Query:
    """One named query: its text and what kind of answer it gives."""

    name: str
    kind: str
    sql: str
    source: str


def parse(text: str, source: str) -> dict[str, Query]:
    """Split one .sql file into its named queries."""
    headers = list(_HEADER.finditer(text))
    if not headers and text.strip():
        raise ValueError(f"{source}: no `-- name: <name> :<kind>` header")
    queries: dict[str, Query] = {}
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        lines = text[header.end() : end].strip().splitlines()
        # The comment block above the next header describes that query: it is not
        # sent (nor prepared) with this one.
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("--")):
            lines.pop()
        body = "\n".join(lines)
        name, kind = header.group(1), header.group(2)
        if name in queries:
            raise ValueError(f"{source}: query {name} is defined twice")
        queries[name] = Query(name, kind, body, source)
    return queries


def _load(directory: Path) -> dict[str, Query]:
    found: dict[str, Query] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, query in parse(path.read_text(), path.name).items():
            if name in found:
                raise ValueError(
                    f"query {name} is defined in both {found[name].source} and {path.name}"
                )
            found[name] = query
    return found


QUERIES: Mapping[str, Query] = MappingProxyType(_load(SQL_DIR / "queries"))
"""Every named query, by name (read-only)."""


def sql(name: str) -> str:
    """The text of the named query `name`."""
    try:
        return QUERIES[name].sql
    except KeyError:
        raise KeyError(f"no query named {name} in sql/queries/") from None


# --- the typed functions --------------------------------------------------------------


@dataclass(frozen=True)
class Door:
    """A typed function, the named query it runs, and the Struct its rows become
    (None: it answers one value per row, or none). `params` names the query's
    parameters when the function builds them from values (arrays from outcomes)
    rather than taking each as a keyword argument."""

    function: Callable[..., Any]
    query: str
    row: type[Struct] | None
    params: frozenset[str] | None = None


DOORS: dict[str, Door] = {}
"""Every typed function, by the query it runs (filled as engine and protocol load)."""


def door(
    query: str, row: type[Struct] | None = None, *, params: tuple[str, ...] | None = None
) -> Callable[[F], F]:
    """Mark a function as the door of `query` (tests/api/test_engine_door.py pairs them)."""
    if query not in QUERIES:
        raise KeyError(f"no query named {query} in sql/queries/")

    def mark(fn: F) -> F:
        DOORS[query] = Door(fn, query, row, None if params is None else frozenset(params))
        return fn

    return mark
