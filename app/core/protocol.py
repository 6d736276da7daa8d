"""The worker protocol's typed door: one function per named query a worker runs
(sql/queries/*.sql), taking keyword arguments and answering Structs or plain
values, never dicts. tests/api/test_engine_door.py pairs each function here with
its query's parameters and result columns, as it does for the API's door
(sluice.core.engine).

One shape per job. `job_claim` answers `ClaimedJob`s; the worker keeps that
very object while the job runs (its JobContext wraps it, the lease names its
`key`), and the executor ends it with an outcome value that holds it:
`Succeeded`, `Failed`, `Released` or `Cancelled`. The completer buffers
outcomes; `job_complete_many` and `job_fail_many` turn a batch of them into the
engine's parallel arrays. A running execution is keyed by (job id, attempt),
never by the job id alone: every write is fenced by both.

    jobs = await protocol.job_claim(conn, worker_id=w, queues=["default"], limit=10, ...)
    ... Succeeded(jobs[0], result='{"rows": 3}') ...
    kept = await protocol.job_complete_many(conn, worker_id=w, outcomes=[...])

Rows that may hold values Python cannot represent (a claimed job, a due
schedule) are read with sluice.core.rows.fetch_tolerant: such a value reads as
an `Undecodable` and the row's `problem` says which, so one bad row never costs
the others.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import msgspec
from msgspec import Struct
from psycopg import AsyncConnection, errors
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from sluice.core.queries import door, sql
from sluice.core.rows import fetch_tolerant, struct_row

S = TypeVar("S", bound=Struct)

#: (job id, attempt): what a lease, an execution and every write name.
Key = tuple[int, int]


# --- running a query -------------------------------------------------------------


async def _rows(
    conn: AsyncConnection[Any], query: str, cls: type[S], params: dict[str, Any] | None = None
) -> list[S]:
    async with conn.cursor(row_factory=struct_row(cls)) as cur:
        await cur.execute(sql(query), params)
        return await cur.fetchall()


async def _column(
    conn: AsyncConnection[Any], query: str, params: dict[str, Any] | None = None
) -> list[Any]:
    """The first column of every row."""
    async with conn.cursor() as cur:
        await cur.execute(sql(query), params)
        return [row[0] for row in await cur.fetchall()]


async def _value(
    conn: AsyncConnection[Any], query: str, params: dict[str, Any] | None = None
) -> Any:
    """The first column of the first row (None when there is none)."""
    async with conn.cursor() as cur:
        await cur.execute(sql(query), params)
        row = await cur.fetchone()
        return None if row is None else row[0]


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters (binary output, odd error messages)."""
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\\0")
    return value


# --- a claimed job and how its attempt ended ---------------------------------------


class ClaimedJob(Struct):
    """A job this worker claimed: a row of `sluice.job_claim`, kept as it is from
    the claim to the outcome. Fields are the claim's columns, in its order."""

    id: int
    tenant: str
    queue: str
    task: str
    payload: Any
    priority: int
    attempt: int
    max_attempts: int
    timeout: dt.timedelta | None
    run_id: int | None
    node: str | None
    run_at: dt.datetime
    created_at: dt.datetime
    started_at: dt.datetime
    #: A DAG node's parents' results, {node id: result} (DAG data flow; None
    #: outside a run, or while the engine does not answer it).
    parents: Any = None
    #: A map element's place in its list (None for any other job).
    map_index: int | None = None
    #: Not a column: the values that could not be decoded (`run_at: ...`), or
    #: None. Such a job cannot run; the worker fails it without retry.
    problem: str | None = None

    @property
    def key(self) -> Key:
        """(id, attempt): the attempt this claim holds."""
        return (self.id, self.attempt)


class Succeeded(Struct, frozen=True):
    """The handler returned: `result` is its value as JSON text (None: none)."""

    job: ClaimedJob
    result: str | None
    output: str | None = None


class Failed(Struct, frozen=True):
    """The attempt failed: retried after the job's backoff while `retryable` and
    attempts are left, else the job ends `failed` in the dead-letter queue.
    `outcome` is the attempt log's word for it: `failed` or `timeout`."""

    job: ClaimedJob
    error: str
    retryable: bool
    output: str | None = None
    outcome: str = "failed"


class Released(Struct, frozen=True):
    """Stopped for a shutdown: handed back (job_release_many), the attempt not counted."""

    job: ClaimedJob


class Cancelled(Struct, frozen=True):
    """Stopped because the database already ended the attempt (`cancelled` by a
    user, or `lost`: rescued after this worker stalled): nothing to write."""

    job: ClaimedJob
    reason: str


Outcome = Succeeded | Failed | Released | Cancelled


class Decision(Struct):
    """What became of a job whose attempt failed: `scheduled` or `ready` (it will
    be retried) or `failed` (dead-lettered)."""

    id: int
    state: str


# --- claim, renew, complete ---------------------------------------------------------


class _JsonbLoader(Loader):
    """jsonb (text) decoded by msgspec: a claimed job's payload is decoded once per
    job, and json.loads (psycopg's default) spent ~6 us on an empty object where
    msgspec spends 0.2. The values are the same (dicts, lists, str, int, float,
    bool, None, integers of any size); what msgspec refuses (a number beyond a
    float's range, which json.loads reads as inf) goes to json.loads, so nothing
    decodes differently. Nesting too deep raises RecursionError in both, which
    fetch_tolerant turns into an Undecodable as before."""

    def load(self, data: Buffer) -> Any:
        try:
            return _decode_json(data)
        except msgspec.DecodeError:
            return json.loads(bytes(data))


_decode_json = msgspec.json.decode


@door("job_claim", ClaimedJob)
async def job_claim(
    conn: AsyncConnection[Any],
    *,
    worker_id: str,
    queues: list[str],
    limit: int,
    lease: dt.timedelta,
    after_priority: int | None = None,
    after_run_at: dt.datetime | None = None,
    after_id: int | None = None,
    tasks: list[str] | None = None,
) -> list[ClaimedJob]:
    """Claim up to `limit` ready jobs, leased to `worker_id` for `lease`; the scan
    starts past (after_priority, after_run_at, after_id) when given. With `tasks`,
    only jobs of those tasks (the ones the caller has handlers for)."""
    # On the connection (a dict assignment), so fetch_tolerant's cursor has it.
    conn.adapters.register_loader("jsonb", _JsonbLoader)
    params = {
        "worker_id": worker_id,
        "queues": queues,
        "limit": limit,
        "lease": lease,
        "after_priority": after_priority,
        "after_run_at": after_run_at,
        "after_id": after_id,
        "tasks": tasks,
    }
    rounds = 1
    while True:
        try:
            jobs = await fetch_tolerant(conn, sql("job_claim"), params, ClaimedJob)
            break
        except errors.SerializationFailure:
            # A row the claim's snapshot saw as ready was moved to history meanwhile
            # (docs/state-machine.md, "Moved rows"): the statement (job_claim_once,
            # which has no subtransaction to retry in) failed whole and claimed
            # nothing. Run it again with a new snapshot, as sluice.job_claim does in
            # the database; not inside a caller's transaction, which is aborted, and
            # as many times as sluice.moved_row_retry allows.
            if (
                rounds >= _MOVED_ROW_ROUNDS
                or conn.info.transaction_status != TransactionStatus.IDLE
            ):
                raise
            rounds += 1
    omitted = [job.id for job in jobs if job.parents == OMITTED_PARENTS]
    if not omitted:
        return jobs
    found = {row.id: row.parents for row in await job_parent_results(conn, ids=omitted)}
    return [
        msgspec.structs.replace(job, parents=found[job.id]) if job.id in found else job
        for job in jobs
    ]


#: How many times job_claim runs a claim that met a moved row (sluice.moved_row_retry's bound).
_MOVED_ROW_ROUNDS = 10

#: What the claim answers for parents' results too large to send with it.
OMITTED_PARENTS = {"_omitted": True}


class ParentResults(Struct):
    """A node's parents' results, by node id."""

    id: int
    parents: Any


@door("job_parent_results", ParentResults)
async def job_parent_results(conn: AsyncConnection[Any], *, ids: list[int]) -> list[ParentResults]:
    """The parents' results of these jobs, read apart from their claim."""
    return await _rows(conn, "job_parent_results", ParentResults, {"ids": ids})


class Renewed(Struct):
    """An attempt whose lease a heartbeat renewed."""

    id: int
    attempt: int


@door("job_heartbeat", Renewed, params=("worker_id", "ids", "attempts", "lease"))
async def job_heartbeat(
    conn: AsyncConnection[Any], *, worker_id: str, held: Sequence[Key], lease: dt.timedelta
) -> set[Key]:
    """Renew the leases of exactly these attempts; answers those renewed (an
    attempt missing is no longer this worker's)."""
    params = {
        "worker_id": worker_id,
        "ids": [k[0] for k in held],
        "attempts": [k[1] for k in held],
        "lease": lease,
    }
    return {(r.id, r.attempt) for r in await _rows(conn, "job_heartbeat", Renewed, params)}


@door("job_progress", params=("worker_id", "id", "attempt", "progress"))
async def job_progress(
    conn: AsyncConnection[Any], *, worker_id: str, job: Key, progress: Any
) -> bool:
    """Record a running attempt's progress (any JSON); False when it is no longer ours."""
    return bool(
        await _value(
            conn,
            "job_progress",
            {"worker_id": worker_id, "id": job[0], "attempt": job[1], "progress": Jsonb(progress)},
        )
    )


@door("job_complete_many", params=("worker_id", "ids", "attempts", "results", "outputs"))
async def job_complete_many(
    conn: AsyncConnection[Any], *, worker_id: str, outcomes: Sequence[Succeeded]
) -> list[int]:
    """Write a batch of successes; answers the ids still this worker's to complete."""
    results = [o.result for o in outcomes]
    outputs = [_text(o.output) for o in outcomes]
    return await _column(
        conn,
        "job_complete_many",
        {
            "worker_id": worker_id,
            "ids": _int_array(o.job.id for o in outcomes),
            "attempts": _int_array(o.job.attempt for o in outcomes),
            # A null array for a batch of none: unnest pads it with nulls, the
            # same values as an array of them, which psycopg dumps in Python.
            "results": results if any(r is not None for r in results) else None,
            "outputs": outputs if any(o is not None for o in outputs) else None,
        },
    )


def _int_array(values: Iterable[int]) -> str:
    """Integers as an array literal (PostgreSQL casts it to the parameter's type):
    a third of what psycopg's list dumping costs, 1.8 us per job of a batch of 256
    (ids and attempts, in a worker that spends about 26 us per job)."""
    return "{" + ",".join(map(str, values)) + "}"


@door(
    "job_fail_many",
    Decision,
    params=("worker_id", "ids", "attempts", "errors", "retryable", "outcomes", "outputs"),
)
async def job_fail_many(
    conn: AsyncConnection[Any], *, worker_id: str, outcomes: Sequence[Failed]
) -> list[Decision]:
    """Write a batch of failed attempts; answers what became of the jobs still ours."""
    return await _rows(
        conn,
        "job_fail_many",
        Decision,
        {
            "worker_id": worker_id,
            "ids": [o.job.id for o in outcomes],
            "attempts": [o.job.attempt for o in outcomes],
            "errors": [_text(o.error) for o in outcomes],
            "retryable": [o.retryable for o in outcomes],
            "outcomes": [o.outcome for o in outcomes],
            "outputs": [_text(o.output) for o in outcomes],
        },
    )


def _attempts(worker_id: str, attempts: Sequence[Key]) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "ids": [k[0] for k in attempts],
        "attempts": [k[1] for k in attempts],
    }


@door("job_release_many", params=("worker_id", "ids", "attempts"))
async def job_release_many(
    conn: AsyncConnection[Any], *, worker_id: str, attempts: Sequence[Key]
) -> list[int]:
    """Hand these attempts back (ready again, the attempt not counted); answers the
    ids released."""
    return await _column(conn, "job_release_many", _attempts(worker_id, attempts))


@door("job_release_unanswered", params=("worker_id", "ids", "attempts"))
async def job_release_unanswered(
    conn: AsyncConnection[Any], *, worker_id: str, attempts: Sequence[Key]
) -> list[int]:
    """Hand back attempts of a claim whose answer never reached the worker (ready
    again, the attempt not counted); answers the ids released."""
    return await _column(conn, "job_release_unanswered", _attempts(worker_id, attempts))


class RunningAttempt(Struct, frozen=True):
    """An attempt the database says a worker runs."""

    id: int
    attempt: int


@door("worker_running_jobs", RunningAttempt)
async def worker_running_jobs(conn: AsyncConnection[Any], *, worker_id: str) -> list[Key]:
    """The (job, attempt) pairs the database says `worker_id` runs."""
    rows = await _rows(conn, "worker_running_jobs", RunningAttempt, {"worker_id": worker_id})
    return [(r.id, r.attempt) for r in rows]


# --- maintenance ---------------------------------------------------------------------


class IsolatedJob(Struct):
    """A job of a pass run one row at a time: `error` None when it was processed,
    else why not, and whether it was then failed into the dead-letter queue."""

    id: int
    error: str | None
    quarantined: bool | None


class IsolatedPrune(Struct):
    """A finished job or run (`kind`) of a prune run one row at a time: `error`
    None when it was deleted, else why not (it is left in place)."""

    kind: str
    id: int
    error: str | None


@door("job_rescue_expired", Decision)
async def job_rescue_expired(conn: AsyncConnection[Any], *, limit: int) -> list[Decision]:
    """Fail (retry or dead-letter) up to `limit` attempts whose lease expired."""
    return await _rows(conn, "job_rescue_expired", Decision, {"limit": limit})


@door("job_rescue_expired_isolated", IsolatedJob)
async def job_rescue_expired_isolated(
    conn: AsyncConnection[Any], *, limit: int
) -> list[IsolatedJob]:
    return await _rows(conn, "job_rescue_expired_isolated", IsolatedJob, {"limit": limit})


@door("job_promote_scheduled")
async def job_promote_scheduled(conn: AsyncConnection[Any], *, limit: int) -> int:
    """Make up to `limit` due scheduled jobs ready; answers how many."""
    return await _value(conn, "job_promote_scheduled", {"limit": limit})


@door("job_promote_scheduled_isolated", IsolatedJob)
async def job_promote_scheduled_isolated(
    conn: AsyncConnection[Any], *, limit: int
) -> list[IsolatedJob]:
    return await _rows(conn, "job_promote_scheduled_isolated", IsolatedJob, {"limit": limit})


@door("job_next_due_in")
async def job_next_due_in(conn: AsyncConnection[Any]) -> float | None:
    """Seconds until the next scheduled job is due (negative: overdue; None: none)."""
    return await _value(conn, "job_next_due_in")


@door("job_prune")
async def job_prune(conn: AsyncConnection[Any], *, retention: dt.timedelta, limit: int) -> int:
    """Delete finished jobs and runs older than `retention`; answers how many."""
    return await _value(conn, "job_prune", {"retention": retention, "limit": limit})


@door("history_prepare")
async def history_prepare(conn: AsyncConnection[Any]) -> int:
    """Make the history partitions of the days ahead; answers how many it made."""
    return await _value(conn, "history_prepare")


@door("history_retire")
async def history_retire(conn: AsyncConnection[Any], *, retention: dt.timedelta) -> int:
    """Drop the history partitions wholly older than `retention`; answers how many."""
    return await _value(conn, "history_retire", {"retention": retention})


@door("history_rollup_watch")
async def history_rollup_watch(conn: AsyncConnection[Any]) -> int:
    """Put the counting triggers on the history partitions whose day is over;
    answers how many it watched."""
    return await _value(conn, "history_rollup_watch")


@door("history_rollup")
async def history_rollup(conn: AsyncConnection[Any]) -> int:
    """Fold the closed partitions' count deltas and count one watched partition;
    answers how many it counted (0 or 1)."""
    return await _value(conn, "history_rollup")


@door("job_prune_isolated", IsolatedPrune)
async def job_prune_isolated(
    conn: AsyncConnection[Any], *, retention: dt.timedelta, limit: int
) -> list[IsolatedPrune]:
    return await _rows(
        conn, "job_prune_isolated", IsolatedPrune, {"retention": retention, "limit": limit}
    )


# --- cron -------------------------------------------------------------------------


class DueSchedule(Struct):
    """A schedule whose next occurrence is due, with the database's `now`."""

    id: int
    tenant: str
    name: str
    cron: str
    timezone: str
    misfire: str
    next_fire_at: dt.datetime | None
    last_fired_at: dt.datetime | None
    updated_at: dt.datetime
    now: dt.datetime
    #: Not a column: the values that could not be decoded, or None.
    problem: str | None = None


@door("schedule_due", DueSchedule)
async def schedule_due(
    conn: AsyncConnection[Any], *, limit: int, now: dt.datetime | None
) -> list[DueSchedule]:
    """Up to `limit` enabled schedules due at `now` (None: the database's clock)."""
    return await fetch_tolerant(
        conn, sql("schedule_due"), {"limit": limit, "now": now}, DueSchedule
    )


@door("schedule_fire")
async def schedule_fire(
    conn: AsyncConnection[Any],
    *,
    id: int,
    seen: dt.datetime,
    occurrences: list[dt.datetime],
    next_fire_at: dt.datetime | None,
    error: str | None,
) -> int | None:
    """Start these occurrences and move the schedule on; answers how many started
    (None: the schedule changed since `seen`, nothing done)."""
    return await _value(
        conn,
        "schedule_fire",
        {
            "id": id,
            "seen": seen,
            "occurrences": occurrences,
            "next_fire_at": next_fire_at,
            "error": error,
        },
    )


@door("schedule_disable")
async def schedule_disable(conn: AsyncConnection[Any], *, id: int, error: str) -> bool:
    return bool(await _value(conn, "schedule_disable", {"id": id, "error": error}))


@door("schedule_next_due_in")
async def schedule_next_due_in(
    conn: AsyncConnection[Any], *, now: dt.datetime | None
) -> float | None:
    """Seconds until the next schedule is due (None: none is enabled)."""
    return await _value(conn, "schedule_next_due_in", {"now": now})


# --- the worker registry and the maintenance lease ----------------------------------


@door("worker_register")
async def worker_register(
    conn: AsyncConnection[Any],
    *,
    id: str,
    hostname: str,
    pid: int,
    queues: list[str],
    concurrency: int,
    heartbeat_interval: dt.timedelta,
    version: str | None,
    tasks: list[str] | None = None,
) -> None:
    """Register (or re-register) the worker; `tasks` are the task names it has
    handlers for (None: any)."""
    await _value(
        conn,
        "worker_register",
        {
            "id": id,
            "hostname": hostname,
            "pid": pid,
            "queues": queues,
            "concurrency": concurrency,
            "heartbeat_interval": heartbeat_interval,
            "version": version,
            "tasks": tasks,
        },
    )


@door("worker_waiting")
async def worker_waiting(conn: AsyncConnection[Any], *, id: str, queues: list[str]) -> None:
    """The worker is about to sleep on LISTEN for `queues`: inserts there notify it
    from now on (sluice.notify_ready). Pass the barrier next, then claim once more."""
    await _value(conn, "worker_waiting", {"id": id, "queues": queues})


@door("worker_wait_barrier")
async def worker_wait_barrier(conn: AsyncConnection[Any], *, queues: list[str]) -> bool:
    """True when no inserter that missed this worker's waiter rows is still open."""
    return bool(await _value(conn, "worker_wait_barrier", {"queues": queues}))


@door("worker_busy")
async def worker_busy(conn: AsyncConnection[Any], *, id: str) -> None:
    """The worker's claims come back full: inserters need not notify it."""
    await _value(conn, "worker_busy", {"id": id})


@door("worker_heartbeat")
async def worker_heartbeat(conn: AsyncConnection[Any], *, id: str) -> bool | None:
    """Mark the worker alive; answers whether it is paused (None: its row is gone)."""
    return await _value(conn, "worker_heartbeat", {"id": id})


@door("worker_stop")
async def worker_stop(conn: AsyncConnection[Any], *, id: str) -> None:
    await _value(conn, "worker_stop", {"id": id})


@door("worker_prune")
async def worker_prune(conn: AsyncConnection[Any], *, age: dt.timedelta) -> int:
    """Forget workers stopped or silent for longer than `age`; answers how many."""
    return await _value(conn, "worker_prune", {"age": age})


@door("leader_acquire")
async def leader_acquire(
    conn: AsyncConnection[Any], *, name: str, holder: str, ttl: dt.timedelta
) -> bool:
    """Take or keep the lease `name` for `ttl`; True when `holder` holds it now."""
    return bool(await _value(conn, "leader_acquire", {"name": name, "holder": holder, "ttl": ttl}))


@door("leader_release")
async def leader_release(conn: AsyncConnection[Any], *, name: str, holder: str) -> None:
    await _value(conn, "leader_release", {"name": name, "holder": holder})


# --- notifications and the connection itself ---------------------------------------


@door("worker_listen")
async def worker_listen(conn: AsyncConnection[Any]) -> None:
    """LISTEN on the job and control channels (on a connection kept for it)."""
    await _value(conn, "worker_listen")


@door("notify_control")
async def notify_control(conn: AsyncConnection[Any], *, payload: str) -> None:
    """Send `payload` (JSON text) on the control channel."""
    await _value(conn, "notify_control", {"payload": payload})


class Probe(Struct):
    """The backend that ran the probe, the token it was sent with, and whether the
    server holds the probe under psycopg's own statement name (no pooler
    translated it)."""

    pid: int
    token: str
    untranslated: bool


@door("connection_probe", Probe)
async def connection_probe(conn: AsyncConnection[Any], *, token: str) -> Probe | None:
    """None when what ran was not this probe (a pooler that loses prepared
    statements can run another client's statement under the same name)."""
    async with conn.cursor() as cur:
        await cur.execute(sql("connection_probe"), {"token": token})
        row = await cur.fetchone()
        names = tuple(c.name for c in cur.description or ())
    if row is None or names != Probe.__struct_fields__:
        return None
    return Probe(*row)


@door("connection_mark")
async def connection_mark(conn: AsyncConnection[Any]) -> str | None:
    """The token the last connection_probe on this server session left (a pooler
    may have handed the session to this connection), or None."""
    return await _value(conn, "connection_mark")
