"""Shapes shared by several API areas: ids and names as request fields, what a
job runs (`JobTemplate`, also a schedule's job), the job resource as shown
(also the answer of the DLQ's actions), counts per state, DAG run parameters
and `notify`.
Each area's own request and response bodies are in its schemas.py."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar.params import PathParameter
from msgspec import UNSET, Meta, Struct, UnsetType
from psycopg import AsyncConnection

from sluice.auth import Principal
from sluice.core import engine
from sluice.core.engine import Job
from sluice.core.jobs import (
    BACKOFF_SECONDS_MAX,
    DAG_NAME,
    JOB_DEFAULTS,
    JOB_STATES,
    MAX_ATTEMPTS_MAX,
    MAX_ATTEMPTS_MIN,
    NODE_ID,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_NAME,
    TASK_NAME,
    TIMEOUT_SECONDS_MAX,
    Backoff,
    Outcome,
)
from sluice.core.problems import Problems, json_problems
from sluice.core.tasks import EMAIL, URL, TaskCatalog, payload_schemas
from sluice.http.errors import found
from sluice.http.redact import redact

BIGINT_MAX = 2**63 - 1

QueueName = Annotated[str, Meta(pattern=QUEUE_NAME.pattern, examples=["default"])]
TaskName = Annotated[str, Meta(pattern=TASK_NAME.pattern, examples=["sleep"])]
DagName = Annotated[str, Meta(pattern=DAG_NAME.pattern, examples=["etl"])]
JobId = Annotated[int, Meta(ge=1, le=BIGINT_MAX)]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]

# Path parameters: ids a bigint can hold, so a huge number is a 404, not a database error.
IdPath = Annotated[int, PathParameter(ge=1, le=BIGINT_MAX)]
DagNamePath = Annotated[str, PathParameter(pattern=DAG_NAME.pattern)]
NodePath = Annotated[str, PathParameter(pattern=NODE_ID.pattern, description="A node's id.")]
QueueNamePath = Annotated[str, PathParameter(pattern=QUEUE_NAME.pattern)]

Seconds = Annotated[float, Meta(ge=0, le=BACKOFF_SECONDS_MAX)]


class WebhookNotify(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """POST a signed JSON event to `url` when the job or run ends (in one of `on`)."""

    url: Annotated[str, Meta(pattern=URL, max_length=2048, examples=["https://example.com/hook"])]
    secret: Annotated[str, Meta(max_length=500, pattern=r"^[^\x00]*$")] | UnsetType = UNSET
    on: list[Outcome] | UnsetType = UNSET


class EmailNotify(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Mail `to` when the job or run ends (in one of `on`)."""

    to: Annotated[list[Annotated[str, Meta(pattern=EMAIL, max_length=320)]], Meta(min_length=1)]
    on: list[Outcome] | UnsetType = UNSET


class Notify(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Who to tell when a job or run ends; `on` defaults to every outcome."""

    webhook: WebhookNotify | UnsetType = UNSET
    email: EmailNotify | UnsetType = UNSET


def notify_json(notify: Notify | None) -> dict[str, Any] | None:
    """`notify` as stored (see sluice.notify_valid): unset fields left out."""
    return None if notify is None else msgspec.to_builtins(notify)


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
    queue: QueueName = JOB_DEFAULTS.queue
    priority: Annotated[
        int, Meta(ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Lower runs first.")
    ] = JOB_DEFAULTS.priority
    max_attempts: Annotated[int, Meta(ge=MAX_ATTEMPTS_MIN, le=MAX_ATTEMPTS_MAX)] = (
        JOB_DEFAULTS.max_attempts
    )
    backoff: Backoff = JOB_DEFAULTS.backoff
    backoff_base: Annotated[Seconds, Meta(description="Delay before the first retry, seconds.")] = (
        JOB_DEFAULTS.backoff_base
    )
    backoff_max: Annotated[Seconds, Meta(description="Longest delay between retries, seconds.")] = (
        JOB_DEFAULTS.backoff_max
    )
    timeout: (
        Annotated[
            float, Meta(gt=0, le=TIMEOUT_SECONDS_MAX, description="Seconds an attempt may run.")
        ]
        | None
    ) = JOB_DEFAULTS.timeout
    notify: Notify | None = None


def template_problems(job: JobTemplate, catalog: TaskCatalog, where: str) -> Problems:
    """Every problem with what a job runs that its schema cannot express."""
    prefix = f"{where}." if where else ""
    found = catalog.problems(job.task, job.payload, where)
    found += json_problems(job.payload, prefix + "payload")
    if job.backoff_max < job.backoff_base:
        found.append((prefix + "backoff_max", "must be at least backoff_base"))
    return found


def shown_job(job: Job) -> Job:
    """The job as the API shows it: secrets masked, JSON bounded (see redact)."""
    return msgspec.structs.replace(
        job,
        payload=redact(job.payload),
        notify=redact(job.notify),
        result=redact(job.result, mask=False),
        progress=redact(job.progress, mask=False),
    )


async def get_job(conn: AsyncConnection, principal: Principal, job_id: int) -> Job:
    """The job as the caller may see it (its tenant's, any for an admin), or a 404."""
    job = await engine.job_get(conn, id=job_id, tenant=principal.scope)
    return shown_job(found(job, f"job {job_id}"))


def spread(counts: dict[str, int]) -> dict[str, int]:
    """A `{state: n}` object with every state present (zero when absent)."""
    return {state: counts.get(state, 0) for state in JOB_STATES}


# Any JSON value: a template that is a whole string, `"{{ params.words }}"`, gives
# the value itself (a list, an object), as in a node's payload.
ParamValue = Any
Params = Annotated[
    dict[Annotated[str, Meta(pattern=r"^[A-Za-z0-9_]{1,100}$")], ParamValue],
    Meta(description="Values for `{{ params.name }}` placeholders in the nodes' payloads."),
]
