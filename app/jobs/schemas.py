"""Request and response bodies of the jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from sluice.core.tasks import TASK_NAME, payload_schemas
from sluice.resources import IdempotencyKey, JobId, JobState, Notify, QueueName

YEAR = 365 * 86400

TaskName = Annotated[str, Meta(pattern=TASK_NAME.pattern, examples=["sleep"])]
Seconds = Annotated[float, Meta(ge=0, le=10 * YEAR)]


class JobTemplate(Struct, forbid_unknown_fields=True, kw_only=True):
    """What to run and how: the fields a job shares with a schedule's job."""

    task: TaskName
    payload: Annotated[
        Any,
        Meta(
            description="JSON the handler receives: for a built-in task, its payload below.",
            # Litestar adds `extra` to the OpenAPI schema: each built-in payload as declared
            # once in sluice.core.tasks, and any JSON for the other tasks.
            extra_json_schema={"extra": {"any_of": [*payload_schemas().values(), {}]}},
        ),
    ] = {}
    queue: QueueName = "default"
    priority: Annotated[int, Meta(ge=-1_000_000, le=1_000_000, description="Lower runs first.")] = 0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 5
    backoff: Literal["exponential", "linear", "constant"] = "exponential"
    backoff_base: Annotated[Seconds, Meta(description="Delay before the first retry, seconds.")] = (
        1.0
    )
    backoff_max: Annotated[Seconds, Meta(description="Longest delay between retries, seconds.")] = (
        3600.0
    )
    timeout: (
        Annotated[float, Meta(gt=0, le=YEAR, description="Seconds an attempt may run.")] | None
    ) = None
    notify: Notify | None = None


class JobSubmit(JobTemplate, forbid_unknown_fields=True, kw_only=True):
    """A job to run: the task (handler) name, its payload, and how and when to run it."""

    run_at: Annotated[datetime, Meta(tz=True, description="Not before this time.")] | None = None
    delay_seconds: (
        Annotated[Seconds, Meta(description="Not before this many seconds from now.")] | None
    ) = None
    depends_on: Annotated[
        list[JobId], Meta(max_length=1000, description="Ids of jobs that must succeed first.")
    ] = []
    idempotency_key: (
        Annotated[
            IdempotencyKey,
            Meta(description="A repeat with the same key returns the first job (or the header)."),
        ]
        | None
    ) = None


class JobBatch(Struct, forbid_unknown_fields=True):
    """Many jobs submitted in one transaction: all are accepted or none."""

    jobs: Annotated[list[JobSubmit], Meta(min_length=1)]


class BatchResult(Struct):
    """The ids of a batch's jobs, in the order submitted."""

    ids: list[int]
    created: int
    existing: Annotated[int, Meta(description="Jobs whose idempotency key was already used.")]


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


class Attempt(Struct):
    """One execution of a job."""

    attempt: int
    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime
    outcome: str
    error: str | None
    output: str | None


class JobDetail(Job, kw_only=True):
    """A job with its parents, every attempt, and the last attempt's output tail."""

    depends_on: list[int]
    attempts: list[Attempt]
    output: str | None
