"""The typed doors (sluice.core.engine for the API, sluice.core.protocol for the
worker protocol, sluice.core.enqueueing and sluice.core.waiting for the Python
API) against sql/queries/*.sql: every named query has one typed function, which
passes exactly the query's parameters, and its Struct has a field for every
column the query answers."""

from __future__ import annotations

import inspect
import re
import sys
import typing

import msgspec
import pytest

from sluice.core import engine, enqueueing, protocol, waiting
from sluice.core.engine import column_of
from sluice.core.queries import DOORS, QUERIES, Door

# The typed doors: the API's, the worker protocol's, and the Python API's (which
# runs on the caller's own connection).
DOOR_MODULES = (engine, protocol, enqueueing, waiting)

PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _arguments(door: Door) -> set[str]:
    """The query parameters a typed function passes: its keyword arguments, a Struct
    argument standing for its fields; or what it declares when it builds them from
    values (arrays from a batch of outcomes)."""
    if door.params is not None:
        return set(door.params)
    hints = typing.get_type_hints(door.function)
    names: set[str] = set()
    for name in inspect.signature(door.function).parameters:
        hint = hints.get(name)
        if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
            names |= set(hint.__struct_fields__)
        elif name != "conn":
            names.add(name)
    return names


async def _columns(db, sql: str) -> list[str]:
    """The names of the columns a statement answers, from PostgreSQL's description."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    statement = PLACEHOLDER.sub(number, sql).rstrip().rstrip(";")
    await db.execute(f"PREPARE described AS {statement}")
    result = db.pgconn.describe_prepared(b"described")
    await db.execute("DEALLOCATE described")
    return [result.fname(i).decode() for i in range(result.nfields)]


def test_every_named_query_has_a_door():
    assert set(QUERIES) - set(DOORS) == set()


def test_every_door_is_a_module_function_named_after_its_query():
    for name, door in DOORS.items():
        module = sys.modules[door.function.__module__]
        assert module in DOOR_MODULES, door.function.__module__
        assert getattr(module, door.function.__name__) is door.function
        assert door.function.__name__ == name


@pytest.mark.parametrize("door", list(DOORS.values()), ids=list(DOORS))
async def test_each_door_pairs_with_its_query(db, door):
    query = QUERIES[door.query]
    assert _arguments(door) == set(PLACEHOLDER.findall(query.sql)), door.query
    if query.kind == "copy":  # answers nothing, and cannot be prepared
        return
    columns = await _columns(db, query.sql)
    if door.row is None:
        assert len(columns) <= 1, (door.query, columns)
        return
    fields = msgspec.structs.fields(door.row)
    read = {column_of(door.row, f.name) for f in fields}
    required = {column_of(door.row, f.name) for f in fields if f.required}
    assert set(columns) <= read, (door.query, "unread columns", set(columns) - read)
    assert required <= set(columns), (door.query, "fields no column fills", required - set(columns))


def test_a_struct_row_ignores_columns_its_struct_lacks():
    """At run time an added column is ignored (the pairing test above flags it)."""

    class Pair(msgspec.Struct):
        a: int
        b: str

    class Cursor:
        description = [type("C", (), {"name": n})() for n in ("b", "extra", "a")]

    make = engine._struct_row(Pair)(Cursor())
    assert make(["x", 0, 1]) == Pair(a=1, b="x")
