"""The API's typed door to the database: one function per named query it runs
(sql/queries/*.sql), taking keyword arguments and answering Structs instead of
dicts, so a renamed column fails a test (tests/api/test_engine_door.py pairs
every function here with its query's parameters and result columns) rather than
a request.

    job = await engine.job_get(conn, id=7, tenant="acme")   # Job | None

Reads survive any value the database holds: a time outside Python's range
(`infinity`, a BC date, a year past 9999, which SQL may store) reads as the
nearest time Python has, and JSON nested too deeply to decode reads as
TOO_DEEP, instead of failing the request.

The worker protocol's queries (claim to completion, maintenance, the worker
registry, LISTEN) have their own door, sluice.core.protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec
from msgspec import Meta, Struct
from psycopg import AsyncConnection, AsyncCursor, DataError, postgres
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from sluice.core.jobs import JobState, RunState, WaitingFor
from sluice.core.queries import door, sql

S = TypeVar("S", bound=Struct)

TOO_DEEP = "(JSON nested too deeply to show; read it with SQL)"
# The ends of Python's datetime, in UTC: what out-of-range times read as.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


# --- reading any stored value ----------------------------------------------------


class _Lenient(Loader):
    """Wraps psycopg's own loader for a type and handles what it refuses."""

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        inner = postgres.adapters.get_loader(oid, Format.TEXT)
        assert inner is not None
        self._inner = inner(oid, context)


class _Timestamptz(_Lenient):
    def load(self, data: Buffer) -> datetime:
        try:
            return self._inner.load(data)
        except DataError:
            text = bytes(data)
            return EARLIEST if text.startswith(b"-") or text.endswith(b" BC") else LATEST


class _Json(_Lenient):
    def load(self, data: Buffer) -> Any:
        try:
            return self._inner.load(data)
        except RecursionError:
            return TOO_DEEP


def _lenient(cursor: AsyncCursor[Any]) -> None:
    for name, loader in (("timestamptz", _Timestamptz), ("jsonb", _Json), ("json", _Json)):
        cursor.adapters.register_loader(name, loader)


# --- running a query -------------------------------------------------------------


def column_of(cls: type[Struct], field: str) -> str:
    """The column a Struct's field is read from: its name, unless the Struct's
    `columns` says otherwise."""
    return getattr(cls, "columns", {}).get(field, field)


def _struct_row(cls: type[S]) -> Callable[[AsyncCursor[Any]], Callable[[Sequence[Any]], S]]:
    """A psycopg row factory making `cls` from the columns named like its fields
    (columns it has no field for are left out)."""

    def factory(cursor: AsyncCursor[Any]) -> Callable[[Sequence[Any]], S]:
        names = [column.name for column in cursor.description or ()]
        index = [
            (field, names.index(column_of(cls, field)))
            for field in cls.__struct_fields__
            if column_of(cls, field) in names
        ]

        def make(values: Sequence[Any]) -> S:
            return cls(**{field: values[i] for field, i in index})

        return make

    return factory


async def _rows(conn: AsyncConnection[Any], query: str, cls: type[S], **params: Any) -> list[S]:
    async with conn.cursor(row_factory=_struct_row(cls)) as cur:
        _lenient(cur)
        await cur.execute(sql(query), params or None)
        return await cur.fetchall()


async def _row(conn: AsyncConnection[Any], query: str, cls: type[S], **params: Any) -> S | None:
    rows = await _rows(conn, query, cls, **params)
    return rows[0] if rows else None


async def _column(conn: AsyncConnection[Any], query: str, **params: Any) -> list[Any]:
    """The first column of every row."""
    async with conn.cursor() as cur:
        _lenient(cur)
        await cur.execute(sql(query), params or None)
        return [row[0] for row in await cur.fetchall()]


async def _value(conn: AsyncConnection[Any], query: str, **params: Any) -> Any:
    """The first column of the first row (None when there is none)."""
    values = await _column(conn, query, **params)
    return values[0] if values else None


async def _count(conn: AsyncConnection[Any], query: str, **params: Any) -> int:
    """How many rows the statement changed."""
    async with conn.cursor() as cur:
        await cur.execute(sql(query), params or None)
        return cur.rowcount


# --- jobs --------------------------------------------------------------------------


class Job(Struct, kw_only=True):
    """A job as stored. Times are RFC 3339; durations are seconds."""

    id: int
    tenant: str
    state: JobState
    task: str
    queue: str
    payload: Any
    priority: int
    attempt: int
    max_attempts: int
    backoff: str
    backoff_base: float
    backoff_max: float
    timeout: float | None
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    last_error: str | None
    reason: str | None
    run_id: int | None
    node: str | None
    idempotency_key: str | None
    notify: dict[str, Any] | None
    progress: Any
    worker_id: str | None
    lease_expires_at: datetime | None
    map_index: Annotated[
        int | None,
        Meta(description="A map element: its place in the list (`node` names its mapped node)."),
    ] = None


class Attempt(Struct):
    """One execution of a job."""

    attempt: int
    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime
    outcome: str
    error: str | None
    output: str | None


class Inserted(Struct):
    """A job job_submit_many created, with its idempotency key."""

    id: int
    idempotency_key: str | None


class KeyHolder(Struct):
    """The job holding an idempotency key, and the digest of the request that used it."""

    id: int
    idempotency_key: str
    request_fingerprint: str | None


class ThroughputMinute(Struct, kw_only=True):
    """Jobs that finished in one minute, by how they ended (`failed`: dead-lettered)."""

    minute: datetime
    succeeded: int
    failed: int
    cancelled: int


Seconds = Annotated[float, Meta(ge=0)]


class WaitTime(Struct, kw_only=True):
    """Seconds jobs waited between becoming runnable and being claimed (null: no jobs)."""

    queue: Annotated[str | None, Meta(description="Null for every queue together.")]
    jobs: int
    p50: Seconds | None
    p90: Seconds | None
    p99: Seconds | None
    max: Seconds | None


# What sluice.job_submit_rows reads of each job (a key left out of a job is null).
SUBMIT_FIELDS = (
    "task",
    "payload",
    "queue",
    "priority",
    "run_at",
    "delay_seconds",
    "max_attempts",
    "backoff",
    "backoff_base",
    "backoff_max",
    "timeout",
    "idempotency_key",
    "fingerprint",
    "notify",
)


def submit_columns(jobs: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The JSON parameters of job_submit_many: (each, shared). A field every job
    has alike goes into `shared` once (left out when null), any other into `each`
    as a list with one value per job. Payloads always go into `each`: comparing
    them costs as much as sending them, and they rarely repeat."""
    each: dict[str, list[Any]] = {}
    shared: dict[str, Any] = {}
    for field in SUBMIT_FIELDS:
        values = [job.get(field) for job in jobs]
        if field != "payload" and values.count(values[0]) == len(values):
            if values[0] is not None:
                shared[field] = values[0]
        else:
            each[field] = values
    return msgspec.json.encode(each).decode(), msgspec.json.encode(shared).decode()


@door("job_submit_many", Inserted, params=("tenant", "each", "shared"))
async def job_submit_many(
    conn: AsyncConnection[Any], *, jobs: Sequence[Mapping[str, Any]], tenant: str
) -> list[Inserted]:
    """Insert `jobs` (one mapping of SUBMIT_FIELDS each) in one statement; the
    created ones, in input order (a job whose idempotency key the tenant already
    used is left out)."""
    if not jobs:
        return []
    each, shared = submit_columns(jobs)
    # Plain tuples, not _rows' row factory: per row it builds a dict of keyword
    # arguments, which cost this batch path as much CPU as building its input.
    async with conn.cursor() as cur:
        params = {"tenant": tenant, "each": each, "shared": shared}
        await cur.execute(sql("job_submit_many"), params)
        return [Inserted(id, key) for id, key in await cur.fetchall()]


@door("job_edges_add")
async def job_edges_add(
    conn: AsyncConnection[Any], *, parents: list[int], children: list[int]
) -> None:
    """Add the edges parents[i] -> children[i]."""
    await _count(conn, "job_edges_add", parents=parents, children=children)


@door("job_by_idempotency_keys", KeyHolder)
async def job_by_idempotency_keys(
    conn: AsyncConnection[Any], *, tenant: str, keys: list[str]
) -> list[KeyHolder]:
    return await _rows(conn, "job_by_idempotency_keys", KeyHolder, tenant=tenant, keys=keys)


@door("job_ids_visible")
async def job_ids_visible(
    conn: AsyncConnection[Any], *, ids: list[int], tenant: str | None
) -> set[int]:
    """Which of `ids` exist in `tenant` (None: in any tenant)."""
    return set(await _column(conn, "job_ids_visible", ids=ids, tenant=tenant))


@door("job_get", Job)
async def job_get(conn: AsyncConnection[Any], *, id: int, tenant: str | None) -> Job | None:
    return await _row(conn, "job_get", Job, id=id, tenant=tenant)


class JobFilter(Struct, kw_only=True):
    """Which jobs job_list answers (None: any), newest first, after the keyset
    position `before_id`."""

    tenant: str | None = None
    states: list[JobState] | None = None
    queue: str | None = None
    task: str | None = None
    run_id: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    before_id: int | None = None
    limit: int = 100


@door("job_list", Job)
async def job_list(conn: AsyncConnection[Any], *, where: JobFilter) -> list[Job]:
    return await _rows(conn, "job_list", Job, **msgspec.structs.asdict(where))


@door("job_attempts", Attempt)
async def job_attempts(conn: AsyncConnection[Any], *, id: int) -> list[Attempt]:
    return await _rows(conn, "job_attempts", Attempt, id=id)


@door("job_parent_ids")
async def job_parent_ids(conn: AsyncConnection[Any], *, id: int) -> list[int]:
    return await _value(conn, "job_parent_ids", id=id)


@door("job_throughput", ThroughputMinute)
async def job_throughput(
    conn: AsyncConnection[Any], *, tenant: str | None, queue: str | None, minutes: int
) -> list[ThroughputMinute]:
    return await _rows(
        conn, "job_throughput", ThroughputMinute, tenant=tenant, queue=queue, minutes=minutes
    )


@door("job_wait_times", WaitTime)
async def job_wait_times(
    conn: AsyncConnection[Any], *, tenant: str | None, queue: str | None, minutes: int, sample: int
) -> list[WaitTime]:
    """All queues together first (queue null), then each queue."""
    return await _rows(
        conn,
        "job_wait_times",
        WaitTime,
        tenant=tenant,
        queue=queue,
        minutes=minutes,
        sample=sample,
    )


@door("job_cancel")
async def job_cancel(conn: AsyncConnection[Any], *, ids: list[int], reason: str) -> list[int]:
    """The ids of the jobs this cancelled."""
    return await _column(conn, "job_cancel", ids=ids, reason=reason)


@door("job_retry")
async def job_retry(conn: AsyncConnection[Any], *, ids: list[int]) -> list[int]:
    """The ids of the jobs this gave fresh attempts."""
    return await _column(conn, "job_retry", ids=ids)


# --- DAG definitions -------------------------------------------------------------------


class Dag(Struct, kw_only=True):
    """One version of a DAG, normalised (durations in seconds, nodes parents-first)."""

    name: str
    tenant: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    created_by: str | None
    versions: list[int] = []


class DagSaved(Struct):
    version: int
    created: bool


@door("dag_save", DagSaved)
async def dag_save(
    conn: AsyncConnection[Any],
    *,
    tenant: str,
    name: str,
    definition: dict[str, Any],
    created_by: str,
) -> DagSaved:
    """Store `definition` as the DAG's next version, unless it equals the newest."""
    saved = await _row(
        conn,
        "dag_save",
        DagSaved,
        tenant=tenant,
        name=name,
        definition=Jsonb(definition),
        created_by=created_by,
    )
    assert saved is not None
    return saved


@door("dag_list", Dag)
async def dag_list(
    conn: AsyncConnection[Any],
    *,
    tenant: str | None,
    after_name: str | None,
    after_tenant: str | None,
    limit: int,
) -> list[Dag]:
    """The newest version of each DAG, by (name, tenant), after that keyset position."""
    return await _rows(
        conn,
        "dag_list",
        Dag,
        tenant=tenant,
        after_name=after_name,
        after_tenant=after_tenant,
        limit=limit,
    )


@door("dag_get", Dag)
async def dag_get(
    conn: AsyncConnection[Any], *, tenant: str, name: str, version: int | None
) -> Dag | None:
    """One version of a DAG (None: the newest), with the list of its versions."""
    return await _row(conn, "dag_get", Dag, tenant=tenant, name=name, version=version)


@door("dag_delete")
async def dag_delete(conn: AsyncConnection[Any], *, tenant: str, name: str) -> int:
    """How many versions went."""
    return await _count(conn, "dag_delete", tenant=tenant, name=name)


# --- DAG runs ---------------------------------------------------------------------------


class StateCounts(Struct, kw_only=True):
    """How many jobs are in each state."""

    blocked: int
    scheduled: int
    ready: int
    running: int
    waiting: int
    succeeded: int
    failed: int
    cancelled: int
    skipped: int


class Run(StateCounts, kw_only=True):
    """A DAG run and how far along its nodes are (nodes per state; a mapped node
    counts once, its elements apart)."""

    id: int
    tenant: str
    dag_name: str | None
    dag_version: int | None
    state: RunState
    params: dict[str, Any]
    notify: dict[str, Any] | None
    idempotency_key: str | None
    schedule_id: int | None
    created_at: datetime
    finished_at: datetime | None
    nodes: int
    percent_done: float
    elements: Annotated[int, Meta(description="Map elements created so far.")] = 0
    elements_done: int = 0
    reason: Annotated[
        str | None, Meta(description="Why it ended, beside its nodes: `timeout`.")
    ] = None
    occurrence: Annotated[
        datetime | None, Meta(description="The cron occurrence it runs for (schedule, backfill).")
    ] = None
    started_at: Annotated[
        datetime | None, Meta(description="When it started running (queued runs: null).")
    ] = None
    deadline: Annotated[
        datetime | None, Meta(description="Its timeout: what is left then is cancelled.")
    ] = None
    concurrency_key: str | None = None
    queue_position: Annotated[
        int | None, Meta(description="A queued run: how many queued runs go first.")
    ] = None


class RunSubmitted(Struct):
    run_id: int
    created: bool
    request_fingerprint: str | None


class MapCounts(Struct, kw_only=True):
    """A mapped node's elements per state."""

    total: int
    scheduled: int
    ready: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class RunNode(Struct, kw_only=True):
    """One node of a run and the job that runs it (a mapped node: the node, with
    its elements counted in `map`)."""

    id: str
    job_id: int
    task: str
    queue: str
    state: JobState
    attempt: int
    max_attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    reason: str | None
    trigger: str = "all_success"
    when: str | None = None
    waiting_for: Annotated[
        WaitingFor | None,
        Meta(description="While `waiting`: a signal, the end of a duration, or its map elements."),
    ] = None
    wakes_at: Annotated[
        datetime | None,
        Meta(description="While waiting for a duration or a signal: when it ends (times out)."),
    ] = None
    result_preview: Annotated[
        str | None,
        Meta(description="The start of its result's JSON text (GET .../result has it all)."),
    ] = None
    result_truncated: bool = False
    map: MapCounts | None = None


class NodeResult(Struct, kw_only=True):
    """A node's whole result (a mapped node's: its elements' results in element order)."""

    id: str
    job_id: int
    state: JobState
    result: Any


class DataflowProblem(Struct):
    """A problem of a definition's data flow, at its place in the document."""

    at: str
    problem: str


class BackfilledRun(Struct):
    """The run of one occurrence of a backfill, and whether the backfill started it."""

    occurrence: datetime
    run_id: int
    created: bool


class RunEdge(Struct):
    """`child` waits for `parent` (node ids)."""

    parent: str
    child: str


@door("dag_run_submit", RunSubmitted)
async def dag_run_submit(
    conn: AsyncConnection[Any],
    *,
    tenant: str,
    definition: dict[str, Any],
    params: dict[str, Any],
    dag_name: str | None,
    dag_version: int | None,
    notify: dict[str, Any] | None,
    idempotency_key: str | None,
    fingerprint: str | None,
) -> RunSubmitted:
    """Create the run of a normalised definition, or find the one its key created."""
    submitted = await _row(
        conn,
        "dag_run_submit",
        RunSubmitted,
        tenant=tenant,
        definition=Jsonb(definition),
        params=Jsonb(params),
        dag_name=dag_name,
        dag_version=dag_version,
        notify=None if notify is None else Jsonb(notify),
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    assert submitted is not None
    return submitted


@door("dag_run_get", Run)
async def dag_run_get(conn: AsyncConnection[Any], *, id: int, tenant: str | None) -> Run | None:
    return await _row(conn, "dag_run_get", Run, id=id, tenant=tenant)


@door("dag_run_list", Run)
async def dag_run_list(
    conn: AsyncConnection[Any],
    *,
    tenant: str | None,
    state: str | None,
    dag_name: str | None,
    before_id: int | None,
    limit: int,
) -> list[Run]:
    """Runs newest first, after the keyset position `before_id`."""
    return await _rows(
        conn,
        "dag_run_list",
        Run,
        tenant=tenant,
        state=state,
        dag_name=dag_name,
        before_id=before_id,
        limit=limit,
    )


@door("dag_run_nodes", RunNode)
async def dag_run_nodes(conn: AsyncConnection[Any], *, id: int) -> list[RunNode]:
    return await _rows(conn, "dag_run_nodes", RunNode, id=id)


@door("dag_run_edges", RunEdge)
async def dag_run_edges(conn: AsyncConnection[Any], *, id: int) -> list[RunEdge]:
    return await _rows(conn, "dag_run_edges", RunEdge, id=id)


@door("dag_run_node", RunNode)
async def dag_run_node(conn: AsyncConnection[Any], *, id: int, node: str) -> RunNode | None:
    return await _row(conn, "dag_run_node", RunNode, id=id, node=node)


@door("dag_run_node_result", NodeResult)
async def dag_run_node_result(
    conn: AsyncConnection[Any], *, id: int, node: str
) -> NodeResult | None:
    return await _row(conn, "dag_run_node_result", NodeResult, id=id, node=node)


@door("dag_dataflow_problems", DataflowProblem)
async def dag_dataflow_problems(
    conn: AsyncConnection[Any],
    *,
    nodes: list[dict[str, Any]],
    concurrency_key: str | None,
    key_at: str,
) -> list[DataflowProblem]:
    """Every data-flow problem of normalised nodes (each with its `at`), and of
    the concurrency key template (at `key_at`), in document order."""
    return await _rows(
        conn,
        "dag_dataflow_problems",
        DataflowProblem,
        nodes=Jsonb(nodes),
        concurrency_key=None if concurrency_key is None else Jsonb(concurrency_key),
        key_at=key_at,
    )


@door("dag_run_signal")
async def dag_run_signal(conn: AsyncConnection[Any], *, id: int, node: str, payload: Any) -> bool:
    """True when the node was waiting for a signal and now succeeded with `payload`."""
    return bool(await _value(conn, "dag_run_signal", id=id, node=node, payload=Jsonb(payload)))


@door("dag_run_rerun")
async def dag_run_rerun(conn: AsyncConnection[Any], *, id: int, node: str) -> int:
    """How many nodes were reset (node `node` and everything below it)."""
    return await _value(conn, "dag_run_rerun", id=id, node=node)


@door("dag_run_backfill", BackfilledRun)
async def dag_run_backfill(
    conn: AsyncConnection[Any],
    *,
    schedule_id: int,
    occurrences: list[datetime],
    params: dict[str, Any] | None,
) -> list[BackfilledRun]:
    return await _rows(
        conn,
        "dag_run_backfill",
        BackfilledRun,
        schedule_id=schedule_id,
        occurrences=occurrences,
        params=None if params is None else Jsonb(params),
    )


@door("dag_run_cancel")
async def dag_run_cancel(conn: AsyncConnection[Any], *, id: int) -> int:
    """How many nodes this cancelled."""
    return await _value(conn, "dag_run_cancel", id=id)


@door("dag_run_retry")
async def dag_run_retry(conn: AsyncConnection[Any], *, id: int) -> int:
    """How many nodes this retried."""
    return await _value(conn, "dag_run_retry", id=id)


# --- the dead-letter queue --------------------------------------------------------------


class DeadLetter(Struct, kw_only=True):
    """A job that ended `failed`, with its error history, waiting for an operator."""

    dead_letter_id: int
    job_id: int
    tenant: str
    queue: str
    task: str
    payload: Any
    run_id: int | None
    attempts: int
    reason: str
    last_error: str | None
    errors: list[dict[str, Any]]
    failed_at: datetime


@door("dead_letter_list", DeadLetter)
async def dead_letter_list(
    conn: AsyncConnection[Any],
    *,
    tenant: str | None,
    queue: str | None,
    task: str | None,
    before_id: int | None,
    limit: int,
) -> list[DeadLetter]:
    """Unresolved entries newest first, after the keyset position `before_id`."""
    return await _rows(
        conn,
        "dead_letter_list",
        DeadLetter,
        tenant=tenant,
        queue=queue,
        task=task,
        before_id=before_id,
        limit=limit,
    )


@door("dead_letter_get", DeadLetter)
async def dead_letter_get(
    conn: AsyncConnection[Any], *, job_id: int, tenant: str | None
) -> DeadLetter | None:
    """The open entry of one job."""
    return await _row(conn, "dead_letter_get", DeadLetter, job_id=job_id, tenant=tenant)


@door("dead_letter_retry")
async def dead_letter_retry(conn: AsyncConnection[Any], *, job_id: int) -> bool:
    return bool(await _value(conn, "dead_letter_retry", job_id=job_id))


@door("dead_letter_discard")
async def dead_letter_discard(conn: AsyncConnection[Any], *, job_id: int) -> bool:
    return bool(await _value(conn, "dead_letter_discard", job_id=job_id))


@door("dead_letter_size")
async def dead_letter_size(conn: AsyncConnection[Any], *, tenant: str | None) -> int:
    """Unresolved entries in `tenant` (None: in every tenant)."""
    return await _value(conn, "dead_letter_size", tenant=tenant)


# --- queues ---------------------------------------------------------------------------


class QueueRow(Struct, kw_only=True):
    """A queue's jobs per state (only the states it has), oldest ready wait, settings."""

    name: str
    counts: dict[str, int]
    oldest_ready_seconds: float
    paused: bool
    concurrency_limit: int | None


class QueueDepth(StateCounts, kw_only=True):
    """A queue's jobs per state, every tenant together, its oldest ready job's wait,
    whether it is paused, and the live, unpaused workers that take it."""

    queue: str
    oldest_ready_seconds: float
    paused: bool
    consumers: int


class UnconsumedQueue(Struct, kw_only=True):
    """A queue with waiting jobs that no live, unpaused worker takes."""

    queue: str
    ready: int
    scheduled: int
    consumers: int


@door("queue_list", QueueRow)
async def queue_list(
    conn: AsyncConnection[Any], *, tenant: str | None, name: str | None
) -> list[QueueRow]:
    """Every queue with jobs or settings (or only `name`), counting `tenant`'s jobs."""
    return await _rows(conn, "queue_list", QueueRow, tenant=tenant, name=name)


@door("queue_pause")
async def queue_pause(conn: AsyncConnection[Any], *, name: str) -> None:
    await _count(conn, "queue_pause", name=name)


@door("queue_resume")
async def queue_resume(conn: AsyncConnection[Any], *, name: str) -> None:
    await _count(conn, "queue_resume", name=name)


@door("queue_set_concurrency")
async def queue_set_concurrency(
    conn: AsyncConnection[Any], *, name: str, limit: int | None
) -> None:
    await _count(conn, "queue_set_concurrency", name=name, limit=limit)


@door("queue_depths", QueueDepth)
async def queue_depths(conn: AsyncConnection[Any]) -> list[QueueDepth]:
    return await _rows(conn, "queue_depths", QueueDepth)


@door("queue_unconsumed", UnconsumedQueue)
async def queue_unconsumed(conn: AsyncConnection[Any]) -> list[UnconsumedQueue]:
    return await _rows(conn, "queue_unconsumed", UnconsumedQueue)


# --- schedules ----------------------------------------------------------------------


class Schedule(Struct, kw_only=True):
    """A cron schedule and where the scheduler is with it."""

    # The field `dag` holds the column dag_name (the API's name for the DAG to run).
    columns: ClassVar[dict[str, str]] = {"dag": "dag_name"}

    id: int
    tenant: str
    name: str
    cron: str
    timezone: str
    job: dict[str, Any] | None
    dag: str | None
    dag_params: dict[str, Any]
    misfire: str
    enabled: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class ScheduleColumns(Struct, kw_only=True):
    """What a schedule's creator or editor sets."""

    name: str
    cron: str
    timezone: str
    job: dict[str, Any] | None
    dag_name: str | None
    dag_params: dict[str, Any]
    misfire: str
    enabled: bool

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "job": None if self.job is None else Jsonb(self.job),
            "dag_name": self.dag_name,
            "dag_params": Jsonb(self.dag_params),
            "misfire": self.misfire,
            "enabled": self.enabled,
        }


@door("schedule_create", Schedule)
async def schedule_create(
    conn: AsyncConnection[Any], *, tenant: str, columns: ScheduleColumns
) -> Schedule:
    created = await _row(conn, "schedule_create", Schedule, tenant=tenant, **columns.params())
    assert created is not None
    return created


@door("schedule_list", Schedule)
async def schedule_list(
    conn: AsyncConnection[Any], *, tenant: str | None, after_id: int | None, limit: int
) -> list[Schedule]:
    """Schedules oldest first, after the keyset position `after_id`."""
    return await _rows(
        conn, "schedule_list", Schedule, tenant=tenant, after_id=after_id, limit=limit
    )


@door("schedule_get", Schedule)
async def schedule_get(
    conn: AsyncConnection[Any], *, id: int, tenant: str | None
) -> Schedule | None:
    return await _row(conn, "schedule_get", Schedule, id=id, tenant=tenant)


@door("schedule_update", Schedule)
async def schedule_update(
    conn: AsyncConnection[Any], *, id: int, tenant: str | None, columns: ScheduleColumns
) -> Schedule | None:
    return await _row(conn, "schedule_update", Schedule, id=id, tenant=tenant, **columns.params())


@door("schedule_delete")
async def schedule_delete(conn: AsyncConnection[Any], *, id: int, tenant: str | None) -> int:
    return await _count(conn, "schedule_delete", id=id, tenant=tenant)


# --- workers ------------------------------------------------------------------------


class Worker(Struct, kw_only=True):
    """A worker process: what it serves, its last heartbeat, how much it runs."""

    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    paused: bool
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    running: int
    alive: bool


@door("worker_list", Worker)
async def worker_list(conn: AsyncConnection[Any], *, limit: int) -> list[Worker]:
    """Live workers first."""
    return await _rows(conn, "worker_list", Worker, limit=limit)


@door("worker_get", Worker)
async def worker_get(conn: AsyncConnection[Any], *, id: str) -> Worker | None:
    return await _row(conn, "worker_get", Worker, id=id)


@door("worker_set_paused")
async def worker_set_paused(conn: AsyncConnection[Any], *, id: str, paused: bool) -> bool:
    """False when there is no such worker."""
    return bool(await _value(conn, "worker_set_paused", id=id, paused=paused))


@door("workers_alive")
async def workers_alive(conn: AsyncConnection[Any]) -> int:
    return await _value(conn, "workers_alive")


class NodesWaiting(Struct):
    """How many DAG nodes wait for one kind of thing (signal, duration, map)."""

    kind: WaitingFor
    nodes: int


@door("dag_nodes_waiting", NodesWaiting)
async def dag_nodes_waiting(conn: AsyncConnection[Any]) -> list[NodesWaiting]:
    return await _rows(conn, "dag_nodes_waiting", NodesWaiting)


@door("dag_runs_queued")
async def dag_runs_queued(conn: AsyncConnection[Any]) -> int:
    return await _value(conn, "dag_runs_queued")


# --- the schema ---------------------------------------------------------------------


@door("schema_revision")
async def schema_revision(conn: AsyncConnection[Any]) -> str | None:
    """The Alembic revision the database is at."""
    return await _value(conn, "schema_revision")
