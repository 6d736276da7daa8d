"""Rows as Structs, and rows that may hold values Python cannot represent.

`struct_row(cls)` is a psycopg row factory that makes each row a `cls` (a
msgspec Struct) straight from its values: when the columns are the Struct's
first fields in order, as the typed doors arrange, a row costs one call.

PostgreSQL accepts values that psycopg cannot turn into Python objects: a
`timestamptz` of `-infinity`, a BC date or a year past 9999, an interval longer
than `datetime.timedelta` can hold (about 2.7 million years), JSON nested deeper
than Python's recursion limit. Decoding one of them raises while a result is
fetched, and the whole result is lost with it: for a claim, every job in the
batch would be leased to this worker and none of them run.

`fetch_tolerant` runs a statement and decodes its rows as usual; only if that
fails does it decode the same result again with loaders that never raise: a
value that cannot be decoded comes back as an `Undecodable` that names the
problem, the row's `problem` field says which columns, and the caller decides
what to do with that one row (the worker fails that job without retry; cron
disables that schedule) while every other row is used. The usual path costs
nothing extra: the tolerant loaders are Python calls around psycopg's C loaders
(about 2 us per value), paid only for a result that needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from msgspec import Struct
from psycopg import AsyncConnection, AsyncCursor
from psycopg.adapt import AdaptersMap, Loader, Transformer
from psycopg.pq import Format

S = TypeVar("S", bound=Struct)

# The types whose text form can hold a value Python cannot represent.
RISKY_TYPES = ("timestamptz", "timestamp", "date", "interval", "json", "jsonb")
# Raw values longer than this are left out of error messages (a payload can be huge).
SHOWN = 80


def struct_row(cls: type[S]) -> Callable[[AsyncCursor[Any]], Callable[[Sequence[Any]], S]]:
    """A psycopg row factory making `cls` from the columns named like its fields.
    Columns it has no field for are left out, fields no column fills keep their
    defaults (the door's pairing test flags both)."""
    fields = cls.__struct_fields__

    def factory(cursor: AsyncCursor[Any]) -> Callable[[Sequence[Any]], S]:
        names = tuple(column.name for column in cursor.description or ())
        if names == fields[: len(names)]:
            return lambda values: cls(*values)
        index = [(field, names.index(field)) for field in fields if field in names]
        return lambda values: cls(**{field: values[i] for field, i in index})

    return factory


class Undecodable:
    """A column value that could not be turned into a Python object."""

    __slots__ = ("problem", "raw")

    def __init__(self, raw: str, exc: BaseException) -> None:
        self.raw = raw
        if isinstance(exc, RecursionError):
            self.problem = "JSON nested too deeply to decode"
        else:
            self.problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if len(raw) <= SHOWN and raw not in self.problem:
            self.problem += f" ({raw!r})"

    def __repr__(self) -> str:
        return f"Undecodable({self.problem!r})"


def _tolerant(base: type[Loader]) -> type[Loader]:
    """A loader that decodes like `base` and returns an Undecodable where it raises."""

    class TolerantLoader(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._base = base(oid, context)

        def load(self, data: Any) -> Any:
            try:
                return self._base.load(data)
            # Any failure to decode one value (DataError, OverflowError,
            # RecursionError...) concerns that value alone.
            except Exception as exc:
                return Undecodable(bytes(data).decode("utf-8", "replace"), exc)

    return TolerantLoader


class _Context:
    """What psycopg's Transformer needs to know: the adapters and the connection."""

    def __init__(self, adapters: AdaptersMap, connection: Any) -> None:
        self.adapters = adapters
        self.connection = connection


async def fetch_tolerant(
    conn: AsyncConnection[Any], statement: str, params: Mapping[str, Any], cls: type[S]
) -> list[S]:
    """Every row of `statement` as a `cls`, whose `problem` field (a string, or
    None) says which values could not be decoded (`column: problem; ...`); those
    values are `Undecodable` instead of failing the fetch."""
    make = struct_row(cls)
    async with conn.cursor(row_factory=make) as cur:
        await cur.execute(statement, params)
        try:
            return await cur.fetchall()
        # A value Python cannot represent (DataError, OverflowError, RecursionError...):
        # the result is still here, decode it again value by value.
        except Exception:
            result = cur.pgresult
            if result is None:
                raise
            adapters = AdaptersMap(cur.adapters)
            for name in RISKY_TYPES:
                info = adapters.types.get(name)
                base = adapters.get_loader(info.oid, Format.TEXT) if info else None
                if info is not None and base is not None:
                    adapters.register_loader(info.oid, _tolerant(base))
            transformer = Transformer(_Context(adapters, conn))
            transformer.set_pgresult(result)
            rows = transformer.load_rows(0, result.ntuples, make(cur))
            for row in rows:
                found = [
                    f"{field}: {value.problem}"
                    for field in cls.__struct_fields__
                    if isinstance(value := getattr(row, field), Undecodable)
                ]
                if found:
                    row.problem = "; ".join(found)  # type: ignore[attr-defined]
            return rows
