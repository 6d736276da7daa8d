"""Enqueueing from Python, in the caller's own transaction.

    handle = add.enqueue(conn, a=1, b=2)            # a task declared with @sluice.task
    handle = sluice.enqueue(conn, "reports.build", {"month": 3}, delay=60)
    handles = add.enqueue_many(conn, [{"a": 1, "b": 2}, {"a": 3, "b": 4}])
    run = sluice.start_run(conn, "nightly", params={"day": "2026-11-21"})

`conn` is a psycopg connection (sync or async), or a SQLAlchemy `Session`,
`AsyncSession` or `Connection` on the psycopg driver (`postgresql+psycopg://`).
The job is inserted inside whatever transaction `conn` has open (psycopg and
SQLAlchemy open one at the first statement when none is), and exists for
others once the caller commits; a rollback leaves no job. The SQL is the
engine's own: `sluice.enqueue` (for a job without a key or parents, the INSERT
it makes, run directly: job_insert), `sluice.enqueue_many`,
`sluice.dag_run_start` (sql/queries/enqueue.sql).

One method for both kinds of connection: with an async connection the call
returns an awaitable (`await add.enqueue(aconn, a=1)`), with a sync one it does
the work at once. The connection already says which world the caller is in, as
it does for `conn.execute`, so there is no second, `_async`, name to remember;
type checkers see the difference through the overloads.

Options (per task in `@sluice.task(...)`, per call with `task.configure(...)`
or as keyword arguments of `sluice.enqueue`): `queue`, `priority`,
`max_attempts`, `timeout` and `retry` (the job's attempts and backoff),
`run_at` or `delay` (when it may start), `idempotency_key` (a second enqueue
with the key returns the first job), `depends_on` (job ids or handles: the job
waits for them to succeed), `tenant`, `notify`.
"""

from __future__ import annotations

import functools
import os
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec
import psycopg
import psycopg.sql
from psycopg.conninfo import make_conninfo

from sluice.core.durations import parse_duration
from sluice.core.jobs import BACKOFFS, DEFAULT_TENANT, JOB_DEFAULTS, TASK_NAME
from sluice.core.queries import door, sql
from sluice.core.typed import Signature
from sluice.core.waiting import AsyncJobHandle, AsyncRunHandle, JobHandle, RunHandle

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

R = TypeVar("R")


# --- the Python API's door: one function per named query, on the caller's driver ---


def _scalar(driver: Any, query: str, params: dict[str, Any]) -> Any:
    """The one value `query` answers, on the caller's own connection: the value on a
    sync one, an awaitable of it on an async one (the caller's driver decides)."""
    return _first(driver, sql(query), params)


def _first(driver: Any, statement: str, params: dict[str, Any], prepare: bool | None = None) -> Any:
    if isinstance(driver, psycopg.AsyncConnection):
        return _first_async(driver, statement, params, prepare)
    row = driver.execute(statement, params, prepare=prepare).fetchone()
    return None if row is None else row[0]


async def _first_async(
    driver: psycopg.AsyncConnection[Any], statement: str, params: dict, prepare: bool | None
) -> Any:
    cur = await driver.execute(statement, params, prepare=prepare)
    row = await cur.fetchone()
    return None if row is None else row[0]


@door("job_enqueue")
def job_enqueue(
    conn: Any,
    *,
    task: str,
    payload: str,
    queue: str,
    priority: int,
    run_at: Any,
    delay: float | None,
    max_attempts: int,
    depends_on: list[int] | None,
    idempotency_key: str | None,
    timeout: float,
    tenant: str,
    backoff: str,
    backoff_base: float,
    backoff_max: float,
    notify: str | None,
) -> Any:
    """sluice.enqueue with every argument given: the new job's id."""
    params = dict(locals())  # the keyword arguments, which are the query's parameters
    del params["conn"]
    return _scalar(conn, "job_enqueue", params)


# job_insert's parameters that may change from one job of a task to the next; the
# others are written into the statement (bound_insert).
_PER_JOB = ("payload", "run_at", "delay")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@door("job_insert", params=tuple(_PLACEHOLDER.findall(sql("job_insert"))))
def job_insert(conn: Any, statement: str, per_job: dict[str, Any]) -> Any:
    """sluice.enqueue's INSERT of one job without a key or parents: the new job's id.
    `statement` is job_insert with the arguments the jobs of a task share written
    in (bound_insert); `per_job` gives the others (the payload; run_at and delay
    unless they are written in too).

    Prepared at its first run on a connection that prepares statements at all
    (`prepare_threshold` not None): it runs again for every job of the task, and
    each of the threshold's unprepared runs would parse and plan it in full,
    sluice.enqueue_row inlined (a few us a job over a connection's first 300 jobs).
    """
    return _first(conn, statement, per_job, True if conn.prepare_threshold is not None else None)


@functools.lru_cache(maxsize=1024)
def bound_insert(fixed: tuple[tuple[str, Any], ...]) -> str:
    """job_insert with the parameters `fixed` names written in as literals (a % in
    one doubled: the statement still has the per-job placeholders). One text per
    task and options, so psycopg prepares it once per connection and the server
    folds the fixed arguments (intervals, the null retry policy) when it plans."""
    values = dict(fixed)
    if set(values) | set(_PER_JOB) != set(_PLACEHOLDER.findall(sql("job_insert"))):
        raise ValueError(f"job_insert: not its parameters: {sorted(values)}")
    if "payload" in values:
        raise ValueError("job_insert: the payload is a parameter, never written in")

    def literal(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        return psycopg.sql.Literal(values[name]).as_string(None).replace("%", "%%")

    return _PLACEHOLDER.sub(literal, sql("job_insert"))


@door("job_enqueue_many")
def job_enqueue_many(conn: Any, *, jobs: str, tenant: str) -> Any:
    """sluice.enqueue_many: the new jobs' ids, in the list's order."""
    return _scalar(conn, "job_enqueue_many", {"jobs": jobs, "tenant": tenant})


@door("job_ids_reserve")
def job_ids_reserve(conn: Any, *, n: int) -> Any:
    """n ids from the jobs' identity sequence, in increasing order (for job_copy)."""
    return _scalar(conn, "job_ids_reserve", {"n": n})


# The columns job_copy may name besides id, task and payload: the options a batch
# sets, in this order. Only names from here are put into the statement.
COPY_COLUMNS = (
    "tenant",
    "queue",
    "priority",
    "run_at",
    "max_attempts",
    "timeout",
    "backoff",
    "backoff_base",
    "backoff_max",
    "notify",
)


def _copy_statement(columns: tuple[str, ...]) -> psycopg.sql.Composed:
    if not set(columns) <= set(COPY_COLUMNS):
        raise ValueError(f"job_copy: not a column it writes: {set(columns) - set(COPY_COLUMNS)}")
    listed = psycopg.sql.SQL("").join(
        psycopg.sql.SQL(", ") + psycopg.sql.Identifier(c) for c in columns
    )
    return psycopg.sql.SQL(sql("job_copy")).format(columns=listed)


@door("job_copy", params=())
def job_copy(conn: Any, *, columns: tuple[str, ...], rows: bytes) -> Any:
    """COPY `rows` (COPY's text format: id, task, payload, then `columns`) into
    sluice.jobs; None, or an awaitable of it on an async connection."""
    statement = _copy_statement(columns)
    if isinstance(conn, psycopg.AsyncConnection):
        return _copy_async(conn, statement, rows)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(rows)
    return None


async def _copy_async(
    conn: psycopg.AsyncConnection[Any], statement: psycopg.sql.Composed, rows: bytes
) -> None:
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        await copy.write(rows)


@door("dag_run_start_named")
def dag_run_start_named(
    conn: Any,
    *,
    tenant: str,
    dag: str,
    params: str,
    notify: str | None,
    idempotency_key: str | None,
) -> Any:
    """A run of the newest version of the stored DAG `dag`: the run's id."""
    return _scalar(
        conn,
        "dag_run_start_named",
        {
            "tenant": tenant,
            "dag": dag,
            "params": params,
            "notify": notify,
            "idempotency_key": idempotency_key,
        },
    )


# --- options -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retry:
    """How a job retries: `max_attempts` in all, `backoff` (exponential, linear or
    constant) from `base` up to `max` between attempts (seconds, a timedelta or
    `"30s"`). `retry=3` is short for `Retry(max_attempts=3)`."""

    max_attempts: int | None = None
    backoff: str | None = None
    base: float | timedelta | str | None = None
    max: float | timedelta | str | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """A job's settings besides its task and payload; None leaves a setting to the
    layer below (the call's options, then the task's, then the engine's defaults)."""

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    backoff: str | None = None
    backoff_base: float | None = None
    backoff_max: float | None = None
    run_at: datetime | None = None
    delay: float | None = None
    idempotency_key: str | None = None
    depends_on: tuple[int, ...] | None = None
    tenant: str | None = None
    notify: Mapping[str, Any] | None = None

    def over(self, base: Options) -> Options:
        """These options, with `base`'s where these leave one unset."""
        return Options(
            **{
                f.name: getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(base, f.name)
                for f in fields(Options)
            }
        )


_OPTION_NAMES = frozenset(f.name for f in fields(Options)) | {"retry"}


def options(**given: Any) -> Options:
    """Options from keyword arguments, checked and normalised (durations to seconds,
    handles to ids); raises TypeError or ValueError naming the option at fault."""
    unknown = set(given) - _OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    retry = given.pop("retry", None)
    if retry is not None:
        if isinstance(retry, int) and not isinstance(retry, bool):
            retry = Retry(max_attempts=retry)
        elif isinstance(retry, Mapping):
            retry = Retry(**retry)
        if not isinstance(retry, Retry):
            raise TypeError("retry: give a number of attempts, a mapping or sluice.Retry(...)")
        if retry.max_attempts is not None:
            if given.get("max_attempts") not in (None, retry.max_attempts):
                raise ValueError("max_attempts is given twice (also in retry), differently")
            given["max_attempts"] = retry.max_attempts
        if retry.backoff is not None:
            given["backoff"] = retry.backoff
        if retry.base is not None:
            given["backoff_base"] = retry.base
        if retry.max is not None:
            given["backoff_max"] = retry.max
    for name, value in given.items():
        if value is None:
            continue
        if name in ("timeout", "delay", "backoff_base", "backoff_max"):
            value = _seconds(name, value)
        elif name == "depends_on":
            value = tuple(_job_id(v) for v in value)
        elif name == "backoff" and value not in BACKOFFS:
            raise ValueError(f"backoff: must be one of {', '.join(BACKOFFS)}")
        elif name in ("priority", "max_attempts") and (
            not isinstance(value, int) or isinstance(value, bool)
        ):
            raise TypeError(f"{name}: must be an int")
        elif name == "run_at" and not isinstance(value, datetime):
            raise TypeError("run_at: must be a datetime")
        out[name] = value
    if out.get("run_at") is not None and out.get("delay") is not None:
        raise ValueError("give run_at or delay, not both")
    return Options(**out)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    seconds = parse_duration(value)
    if seconds is None:
        raise ValueError(f"{name}: expected seconds, a timedelta or a duration such as 30s or 5m")
    return seconds


def _job_id(value: Any) -> int:
    job_id = getattr(value, "id", value)
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        raise TypeError(f"depends_on: expected job ids or handles, got {value!r}")
    return job_id


# --- connections -------------------------------------------------------------------


def _driver(conn: Any) -> psycopg.Connection[Any] | None:
    """The psycopg connection of a sync connection or SQLAlchemy session, or None
    when `conn` is async."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.AsyncConnection):
        return None
    module = type(conn).__module__
    if module.startswith("sqlalchemy.ext.asyncio"):
        return None
    if module.startswith("sqlalchemy"):
        # Session.connection() joins (or begins) the session's transaction;
        # Connection.connection is the pooled DBAPI connection of that transaction.
        sa = conn.connection() if hasattr(conn, "get_bind") else conn
        return _psycopg(sa.connection.driver_connection, psycopg.Connection)
    raise TypeError(
        "conn: expected a psycopg connection or a SQLAlchemy session (postgresql+psycopg://), "
        f"got {type(conn).__name__}"
    )


async def _async_driver(conn: Any) -> psycopg.AsyncConnection[Any]:
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    sa = await conn.connection() if hasattr(conn, "get_bind") else conn
    raw = await sa.get_raw_connection()
    return _psycopg(raw.driver_connection, psycopg.AsyncConnection)


def _psycopg(driver: Any, kind: type) -> Any:
    if not isinstance(driver, kind):
        raise TypeError(
            "conn: Sluice enqueues through SQLAlchemy's psycopg (3) driver; use a "
            f"postgresql+psycopg:// URL (this session's driver connection is {type(driver)!r})"
        )
    return driver


# Where a handle made from a connection waits: the connection's own parameters
# (with its password), unless SLUICE_LISTEN_URL names the server for LISTEN (a
# pooler in transaction mode in front of the main URL drops notifications).
_CONNINFO: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _conninfo(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> str:
    info = _CONNINFO.get(conn)
    if info is None:
        listen = os.environ.get("SLUICE_LISTEN_URL")
        if listen:
            info = listen
        else:
            params = conn.info.get_parameters()
            if conn.info.password:
                params["password"] = conn.info.password
            info = make_conninfo(**params)
        _CONNINFO[conn] = info
    return info


# --- enqueueing --------------------------------------------------------------------


def _shared_params(task: str, opts: Options) -> dict[str, Any]:
    """sluice.enqueue's arguments that every job of a task with these options has
    (all but the payload, when it may start, its key and its parents), each given:
    the defaults from sluice.core.jobs (see sql/queries/enqueue.sql)."""
    return {
        "task": task,
        "queue": opts.queue or JOB_DEFAULTS.queue,
        "priority": JOB_DEFAULTS.priority if opts.priority is None else opts.priority,
        "max_attempts": JOB_DEFAULTS.max_attempts
        if opts.max_attempts is None
        else opts.max_attempts,
        "timeout": JOB_DEFAULTS.timeout if opts.timeout is None else opts.timeout,
        "tenant": opts.tenant or DEFAULT_TENANT,
        "backoff": opts.backoff or JOB_DEFAULTS.backoff,
        "backoff_base": JOB_DEFAULTS.backoff_base
        if opts.backoff_base is None
        else opts.backoff_base,
        "backoff_max": JOB_DEFAULTS.backoff_max if opts.backoff_max is None else opts.backoff_max,
        "notify": None if opts.notify is None else msgspec.json.encode(opts.notify).decode(),
    }


def _fixed_params(task: str, opts: Options) -> tuple[tuple[str, Any], ...]:
    """What bound_insert writes into job_insert for a task with these options: the
    shared arguments, and run_at and delay when neither is given (the usual case:
    the payload is then the statement's one parameter)."""
    fixed = _shared_params(task, opts)
    if opts.run_at is None and opts.delay is None:
        fixed |= {"run_at": None, "delay": None}
    return tuple(fixed.items())


def _one_params(task: str, payload: bytes | str, opts: Options) -> dict[str, Any]:
    """sluice.enqueue's arguments, each one given (see sql/queries/enqueue.sql)."""
    return {
        **_shared_params(task, opts),
        "payload": payload.decode() if isinstance(payload, bytes) else payload,
        "run_at": opts.run_at,
        "delay": opts.delay,
        "depends_on": list(opts.depends_on) if opts.depends_on else None,
        "idempotency_key": opts.idempotency_key,
    }


def _element(task: str, opts: Options) -> dict[str, Any]:
    """One element of sluice.enqueue_many's list, without its payload: the task and
    the options that are set (the function fills in the rest as sluice.enqueue would)."""
    element: dict[str, Any] = {"task": task}
    for name in _ELEMENT_OPTIONS:
        value = getattr(opts, name)
        if value is not None:
            element[name] = value
    return element


_ELEMENT_OPTIONS = tuple(f.name for f in fields(Options) if f.name != "tenant")


class _Call(Generic[R]):
    """What enqueueing needs to know of a task: its name, how to encode its
    payload, how to read its result back."""

    __slots__ = ("_encode", "_encode_many", "_insert", "_read", "name", "opts")

    def __init__(
        self,
        name: str,
        opts: Options,
        encode: Callable[[tuple[Any, ...], Mapping[str, Any]], bytes],
        read: Callable[[Any], R] | None,
        encode_many: Callable[[list[Mapping[str, Any]]], list[bytes]] | None = None,
    ) -> None:
        self.name = name
        self.opts = opts
        self._encode = encode
        self._read = read
        self._encode_many = encode_many or (lambda items: [encode((), f) for f in items])
        self._insert: str | None = None  # job_insert for these options (bound_insert)

    def enqueue(self, conn: Any, args: tuple[Any, ...], fields: Mapping[str, Any]) -> Any:
        payload = self._encode(args, fields)
        opts = self.opts
        if opts.idempotency_key is not None or opts.depends_on:
            return self._enqueue_function(conn, _one_params(self.name, payload, opts))
        # Without a key or parents, sluice.enqueue's own INSERT, run directly.
        statement = self._insert
        if statement is None:
            statement = self._insert = bound_insert(_fixed_params(self.name, opts))
        per_job = {"payload": payload.decode()}
        if opts.run_at is not None or opts.delay is not None:
            per_job |= {"run_at": opts.run_at, "delay": opts.delay}
        driver = _driver(conn)
        if driver is None:
            return self._insert_async(conn, statement, per_job)
        return JobHandle(job_insert(driver, statement, per_job), _conninfo(driver), self._read)

    async def _insert_async(
        self, conn: Any, statement: str, per_job: dict[str, Any]
    ) -> AsyncJobHandle[R]:
        driver = await _async_driver(conn)
        job_id = await job_insert(driver, statement, per_job)
        return AsyncJobHandle(job_id, _conninfo(driver), self._read)

    def _enqueue_function(self, conn: Any, params: dict[str, Any]) -> Any:
        """The job through sluice.enqueue (a key or parents: ON CONFLICT, the edges)."""
        driver = _driver(conn)
        if driver is None:
            return self._enqueue_async(conn, params)
        return JobHandle(job_enqueue(driver, **params), _conninfo(driver), self._read)

    async def _enqueue_async(self, conn: Any, params: dict[str, Any]) -> AsyncJobHandle[R]:
        driver = await _async_driver(conn)
        job_id = await job_enqueue(driver, **params)
        return AsyncJobHandle(job_id, _conninfo(driver), self._read)

    def enqueue_many(self, conn: Any, items: Iterable[Any]) -> Any:
        batch = self._batch(items)
        driver = _driver(conn)
        if driver is None:
            return self._enqueue_many_async(conn, batch)
        if not batch.payloads:
            return Handles([], JobHandle, "", self._read)
        if not batch.by_copy or _in_pipeline(driver):
            jobs = self._json(batch.payloads, batch.own)
            ids = job_enqueue_many(driver, jobs=jobs, tenant=batch.tenant)
        elif _outside_transaction(driver):
            with driver.transaction():
                ids = self._copy(driver, batch)
        else:
            ids = self._copy(driver, batch)
        return Handles(ids, JobHandle, _conninfo(driver), self._read)

    @staticmethod
    def _copy(driver: psycopg.Connection[Any], batch: _Batch) -> list[int]:
        ids = job_ids_reserve(driver, n=len(batch.payloads))
        job_copy(driver, columns=batch.columns, rows=batch.rows(ids))
        return ids

    async def _enqueue_many_async(self, conn: Any, batch: _Batch) -> Handles[AsyncJobHandle[R]]:
        driver = await _async_driver(conn)
        if not batch.payloads:
            return Handles([], AsyncJobHandle, "", self._read)
        if not batch.by_copy or _in_pipeline(driver):
            jobs = self._json(batch.payloads, batch.own)
            ids = await job_enqueue_many(driver, jobs=jobs, tenant=batch.tenant)
        elif _outside_transaction(driver):
            async with driver.transaction():
                ids = await self._copy_async(driver, batch)
        else:
            ids = await self._copy_async(driver, batch)
        return Handles(ids, AsyncJobHandle, _conninfo(driver), self._read)

    @staticmethod
    async def _copy_async(driver: psycopg.AsyncConnection[Any], batch: _Batch) -> list[int]:
        ids = await job_ids_reserve(driver, n=len(batch.payloads))
        await job_copy(driver, columns=batch.columns, rows=batch.rows(ids))
        return ids

    def _batch(self, items: Iterable[Any]) -> _Batch:
        """The items' payloads, and how they go in. An item is a mapping of the
        payload's fields, or a pair (fields, options)."""
        base = self.opts
        tenant = base.tenant or DEFAULT_TENANT
        given: list[Mapping[str, Any]] = []  # each item's fields
        own: dict[int, Options] = {}  # the items with options of their own, by position
        for item in items:
            if type(item) is dict or isinstance(item, Mapping):  # the ABC's check is slow
                given.append(item)
                continue
            if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], Mapping):
                raise TypeError(
                    "enqueue_many: each item is a mapping of the payload's fields, or a pair "
                    f"(fields, options); got {type(item).__name__}"
                )
            fields, extra = item
            opts = options(**extra).over(base)
            if (opts.tenant or DEFAULT_TENANT) != tenant:
                raise ValueError("enqueue_many: every job of one call has the same tenant")
            own[len(given)] = opts
            given.append(fields)
        payloads = self._encode_many(given)
        if not own and _copyable(base):
            columns, template = _copy_template(self.name, base)
            return _Batch(payloads, tenant, own, columns, template)
        return _Batch(payloads, tenant, own)

    def _json(self, payloads: list[bytes], own: dict[int, Options]) -> str:
        """The JSON list for sluice.enqueue_many."""
        # Every element without options of its own starts the same way: encode that
        # once, and each element is that prefix, its payload and a brace.
        prefix = msgspec.json.encode(_element(self.name, self.opts))[:-1] + b',"payload":'
        parts: list[bytes] = []
        for position, payload in enumerate(payloads):
            opts = own.get(position)
            if opts is None:
                parts.append(prefix + payload + b"}")
                continue
            element = _element(self.name, opts)
            element["payload"] = msgspec.Raw(payload)
            parts.append(msgspec.json.encode(element))
        return (b"[" + b",".join(parts) + b"]").decode()


H = TypeVar("H", bound=JobHandle[Any])


class Handles(Sequence[H]):
    """The handles of the jobs `enqueue_many` made, in the items' order; `ids`
    holds their ids. A handle is made when it is read: ten thousand objects made
    at once, and kept, cost the client as much CPU as the server's whole insert
    of the jobs (mostly the garbage collector's passes over them)."""

    __slots__ = ("_conninfo", "_kind", "_read", "ids")

    def __init__(
        self, ids: list[int], kind: type[H], conninfo: str, read: Callable[[Any], Any] | None
    ) -> None:
        self.ids = ids
        self._kind = kind
        self._conninfo = conninfo
        self._read = read

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> H: ...
    @overload
    def __getitem__(self, index: slice) -> list[H]: ...
    def __getitem__(self, index: int | slice) -> H | list[H]:
        if isinstance(index, slice):
            return [self._kind(i, self._conninfo, self._read) for i in self.ids[index]]
        return self._kind(self.ids[index], self._conninfo, self._read)

    def __iter__(self) -> Iterator[H]:
        kind, conninfo, read = self._kind, self._conninfo, self._read
        return (kind(i, conninfo, read) for i in self.ids)

    def __repr__(self) -> str:
        return f"<{len(self.ids)} {self._kind.__name__}s>"


# --- enqueue_many by COPY --------------------------------------------------------------
#
# A batch of jobs that share their options goes in by COPY (job_copy) with ids
# reserved first (job_ids_reserve), two round trips in the caller's transaction:
# sluice.enqueue_many's INSERT ... SELECT from one JSON parameter costs the
# server about 3 us more per job than COPY (parsing the list, an expression per
# column, RETURNING), and made enqueue_many 0.70-0.88 of COPY's rate. The
# options that COPY cannot express send the batch to sluice.enqueue_many: an
# idempotency key (ON CONFLICT), parents (edges), a delay (the server's now()).


@dataclass(frozen=True, slots=True)
class _Batch:
    """What enqueue_many sends: the payloads (JSON), the options of the items that
    have their own, and what job_copy writes besides the payloads (`template`
    None: the batch goes to sluice.enqueue_many)."""

    payloads: list[bytes]
    tenant: str
    own: dict[int, Options]
    columns: tuple[str, ...] = ()
    template: bytes | None = None  # one row of COPY text: %d for the id, %b for the payload

    @property
    def by_copy(self) -> bool:
        """True when the batch can go in by COPY."""
        return self.template is not None

    def rows(self, ids: list[int]) -> bytes:
        """The COPY text of the jobs, with these ids. A payload comes from msgspec,
        which writes no whitespace and escapes control characters inside strings
        (JSON allows no other): only its backslashes need COPY's escape."""
        template = self.template
        assert template is not None, "a batch for sluice.enqueue_many"
        return b"".join(
            [
                template % (i, p.replace(b"\\", b"\\\\"))
                for i, p in zip(ids, self.payloads, strict=True)
            ]
        )


def _outside_transaction(driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True when each statement on `driver` would commit on its own (autocommit, no
    transaction open): the ids and the COPY then need a transaction of their own."""
    return driver.autocommit and driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def _in_pipeline(driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True in psycopg's pipeline mode, where COPY is not available."""
    return driver.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF


def _copyable(opts: Options) -> bool:
    return opts.idempotency_key is None and not opts.depends_on and opts.delay is None


# The retry policy the table stores as null (13_jobs.sql), as sluice.enqueue_row
# does: a column given its default value is left out.
_DEFAULT_WHEN_EQUAL = ("backoff", "backoff_base", "backoff_max")


def _copy_template(task: str, opts: Options) -> tuple[tuple[str, ...], bytes]:
    """The columns a batch with these options sets, and its COPY row template."""
    columns: list[str] = []
    values: list[bytes] = []
    for name in COPY_COLUMNS:
        value = getattr(opts, name)
        if value is None or (name in _DEFAULT_WHEN_EQUAL and value == getattr(JOB_DEFAULTS, name)):
            continue
        columns.append(name)
        values.append(_copy_field(name, value))
    # The template is formatted with %: a literal % in a value is written %%.
    fixed = [v.replace(b"%", b"%%") for v in (_copy_escape(task.encode()), *values)]
    template = b"%d\t" + fixed[0] + b"\t%b" + b"".join(b"\t" + v for v in fixed[1:]) + b"\n"
    return tuple(columns), template


def _copy_field(name: str, value: Any) -> bytes:
    """One option as a field of COPY's text format."""
    if name in ("timeout", "backoff_base", "backoff_max"):
        text = f"{value:.6f} seconds"  # seconds, as make_interval(secs => ...) takes them
    elif name == "run_at":
        text = value.isoformat()  # naive: the session's time zone, as psycopg sends it
    elif name == "notify":
        return _copy_escape(msgspec.json.encode(value))
    else:
        text = str(value)
    return _copy_escape(text.encode())


def _copy_escape(value: bytes) -> bytes:
    return (
        value.replace(b"\\", b"\\\\")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
        .replace(b"\t", b"\\t")
    )


def _untyped(args: tuple[Any, ...], fields: Mapping[str, Any]) -> bytes:
    """The payload of `sluice.enqueue(conn, task, payload)`: any JSON value."""
    (payload,) = args
    try:
        return msgspec.json.encode(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload: {exc}") from None


def _name(task: str) -> str:
    if not TASK_NAME.match(task):
        raise ValueError(f"task: {task!r} is not a task name ({TASK_NAME.rule})")
    return task


@overload
def enqueue(
    conn: psycopg.Connection[Any] | Session, task: str, payload: Any = ..., **options: Any
) -> JobHandle[Any]: ...
@overload
def enqueue(
    conn: psycopg.AsyncConnection[Any] | AsyncSession,
    task: str,
    payload: Any = ...,
    **options: Any,
) -> Awaitable[AsyncJobHandle[Any]]: ...
def enqueue(conn: Any, task: str, payload: Any = None, **opts: Any) -> Any:
    """Enqueue a job of any task by name, inside `conn`'s transaction; a handle
    (awaitable for an async connection). The payload is any JSON value (`{}` when
    left out); a task declared in this process with `@sluice.task` checks it too."""
    declared = _declared(task)
    call_opts = options(**opts)
    if declared is not None:
        payload = {} if payload is None else payload
        call = declared._call(call_opts)
        if declared.signature.form == "payload":
            return call.enqueue(conn, (payload,), {})
        if not isinstance(payload, Mapping):
            raise TypeError(f"payload: task {task!r} takes a mapping of its fields")
        return call.enqueue(conn, (), payload)
    call = _Call(_name(task), call_opts, _untyped, None)
    return call.enqueue(conn, ({} if payload is None else payload,), {})


@overload
def start_run(
    conn: psycopg.Connection[Any] | Session,
    dag: str,
    params: Mapping[str, Any] | None = ...,
    **opts: Any,
) -> RunHandle: ...
@overload
def start_run(
    conn: psycopg.AsyncConnection[Any] | AsyncSession,
    dag: str,
    params: Mapping[str, Any] | None = ...,
    **opts: Any,
) -> Awaitable[AsyncRunHandle]: ...
def start_run(
    conn: Any,
    dag: str,
    params: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    tenant: str | None = None,
    notify: Mapping[str, Any] | None = None,
) -> Any:
    """Start a run of the newest version of the stored DAG `dag` with `params`,
    inside `conn`'s transaction (`sluice.dag_run_start`); a run handle (awaitable
    for an async connection). With an idempotency key the tenant already used,
    the existing run."""
    args = {
        "tenant": tenant or DEFAULT_TENANT,
        "dag": dag,
        "params": msgspec.json.encode(params or {}).decode(),
        "notify": None if notify is None else msgspec.json.encode(notify).decode(),
        "idempotency_key": idempotency_key,
    }
    driver = _driver(conn)
    if driver is None:
        return _start_run_async(conn, args)
    return RunHandle(dag_run_start_named(driver, **args), _conninfo(driver))


async def _start_run_async(conn: Any, args: dict[str, Any]) -> AsyncRunHandle:
    driver = await _async_driver(conn)
    return AsyncRunHandle(await dag_run_start_named(driver, **args), _conninfo(driver))


# --- tasks -------------------------------------------------------------------------

# The tasks declared in this process, by name, so that sluice.enqueue() by name
# checks a payload as the task's own enqueue does.
_DECLARED: dict[str, Task[..., Any]] = {}


def _declared(name: str) -> Task[..., Any] | None:
    return _DECLARED.get(name)


class Task(Generic[R]):
    """A task function with its name and its default options: `@sluice.task`
    answers one. Calling it calls the function; `enqueue` makes a job of it."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        signature: Signature,
        opts: Options,
    ) -> None:
        self.fn = fn
        self.name = _name(name)
        self.signature = signature
        self.options = opts
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self._default = self._call(Options())
        _DECLARED[self.name] = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<sluice task {self.name!r} ({self.fn.__module__}.{self.fn.__qualname__})>"

    def _call(self, call_opts: Options) -> _Call[R]:
        read = self.signature.read_result if self.signature.return_type is not Any else None
        return _Call(
            self.name, call_opts.over(self.options), self._encode, read, self.signature.encode_many
        )

    def _encode(self, args: tuple[Any, ...], fields: Mapping[str, Any]) -> bytes:
        if self.signature.form == "payload":
            if args and fields:
                raise TypeError(f"{self.name}.enqueue: give the payload or its fields, not both")
            if len(args) > 1:
                raise TypeError(f"{self.name}.enqueue: takes one payload")
            return self.signature.encode(args[0] if args else fields)
        if args:
            raise TypeError(
                f"{self.name}.enqueue: pass the payload's fields as keyword arguments "
                f"({', '.join(self.signature.fields)})"
            )
        return self.signature.encode(fields)

    def configure(self, **opts: Any) -> Configured[R]:
        """This task with options for the next calls: `add.configure(delay=60,
        idempotency_key="k").enqueue(conn, a=1, b=2)`."""
        return Configured(self._call(options(**opts)))

    @overload
    def enqueue(
        self, conn: psycopg.Connection[Any] | Session, /, *payload: Any, **fields: Any
    ) -> JobHandle[R]: ...
    @overload
    def enqueue(
        self, conn: psycopg.AsyncConnection[Any] | AsyncSession, /, *payload: Any, **fields: Any
    ) -> Awaitable[AsyncJobHandle[R]]: ...
    def enqueue(self, conn: Any, /, *payload: Any, **fields: Any) -> Any:
        """Enqueue a job of this task inside `conn`'s transaction, with the payload's
        fields as keyword arguments (checked against the function's annotations);
        a handle, awaitable for an async connection."""
        return self._default.enqueue(conn, payload, fields)

    @overload
    def enqueue_many(
        self, conn: psycopg.Connection[Any] | Session, items: Iterable[Any], /
    ) -> Handles[JobHandle[R]]: ...
    @overload
    def enqueue_many(
        self, conn: psycopg.AsyncConnection[Any] | AsyncSession, items: Iterable[Any], /
    ) -> Awaitable[Handles[AsyncJobHandle[R]]]: ...
    def enqueue_many(self, conn: Any, items: Iterable[Any], /) -> Any:
        """Enqueue one job per item, in one or two round trips however many: an item
        is a mapping of the payload's fields, or a pair (fields, options). Answers
        their handles in the items' order (a Handles sequence; `.ids` the ids)."""
        return self._default.enqueue_many(conn, items)


class Configured(Generic[R]):
    """A task with per-call options (`Task.configure`)."""

    __slots__ = ("_call",)

    def __init__(self, call: _Call[R]) -> None:
        self._call = call

    def enqueue(self, conn: Any, /, *payload: Any, **fields: Any) -> Any:
        """As Task.enqueue, with these options."""
        return self._call.enqueue(conn, payload, fields)

    def enqueue_many(self, conn: Any, items: Iterable[Any], /) -> Any:
        """As Task.enqueue_many, with these options."""
        return self._call.enqueue_many(conn, items)


def declare(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    context_type: type | None = None,
    **opts: Any,
) -> Task[Any]:
    """A Task for `fn` (what `@sluice.task` makes before registering it)."""
    task_name = name or fn.__name__
    return Task(fn, task_name, Signature(fn, task_name, context_type), options(**opts))
