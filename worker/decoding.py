"""Reading rows that may hold values Python cannot represent.

PostgreSQL accepts values that psycopg cannot turn into Python objects: a
`timestamptz` of `-infinity`, a BC date or a year past 9999, an interval longer
than `datetime.timedelta` can hold (about 2.7 million years), JSON nested deeper
than Python's recursion limit. Decoding one of them raises while a result is
fetched, and the whole result is lost with it: for a claim, every job in the
batch would be leased to this worker and none of them run.

`fetch_tolerant` runs a named query and decodes its rows as usual; only if that
fails does it decode the same result again with loaders that never raise: a
value that cannot be decoded comes back as an `Undecodable` that names the
problem, and the caller decides what to do with that one row (the executor
fails that job without retry; cron disables that schedule) while every other
row is used. The usual path costs nothing extra: the tolerant loaders are
Python calls around psycopg's C loaders (about 2 us per value), paid only for
a result that needs them.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.adapt import AdaptersMap, Loader, Transformer
from psycopg.pq import Format
from psycopg.rows import dict_row

from sluice.core.queries import Query

# The types whose text form can hold a value Python cannot represent.
RISKY_TYPES = ("timestamptz", "timestamp", "date", "interval", "json", "jsonb")
# Raw values longer than this are left out of error messages (a payload can be huge).
SHOWN = 80
# The key under which fetch_tolerant lists a row's undecodable values (a name no
# column has), so that checking a row costs one lookup.
PROBLEMS = "(undecodable)"


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
    conn: AsyncConnection[Any], query: Query, /, **params: Any
) -> list[dict[str, Any]]:
    """Every row of a `:many` named query, as dicts; values that cannot be
    decoded are `Undecodable` instead of failing the fetch."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.sql, params or None)
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
            rows = transformer.load_rows(0, result.ntuples, dict_row(cur))
            for row in rows:
                found = [f"{k}: {v.problem}" for k, v in row.items() if isinstance(v, Undecodable)]
                if found:
                    row[PROBLEMS] = "; ".join(found)
            return rows


def problems(row: dict[str, Any]) -> str | None:
    """`column: problem; ...` for the values of a row of `fetch_tolerant` that
    could not be decoded, or None."""
    return row.get(PROBLEMS)
