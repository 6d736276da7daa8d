"""/api/v1/jobs: submit one or a batch, list, get, cancel, retry; throughput and
wait times (the dashboard's overview charts them; anything else may read them too)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Response, Router, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, QueryParameter

from sluice.auth import OPERATOR, SUBMITTER, VIEWER
from sluice.core.engine import Job, JobFilter
from sluice.core.jobs import QUEUE_NAME, TASK_NAME, TENANT_NAME, JobState
from sluice.http.deps import Caller, Catalog, Conn, ReadConn, Settings
from sluice.http.errors import error_responses, invalid
from sluice.http.openapi import example_body
from sluice.http.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.http.shapes import BIGINT_MAX, IdPath
from sluice.http.waiting import WaitParam, wait_seconds
from sluice.jobs import service
from sluice.jobs.schemas import (
    BatchResult,
    JobBatch,
    JobDetail,
    JobSubmit,
    Throughput,
    WaitTimes,
)

SLEEP_JOB = {"task": "sleep", "payload": {"seconds": 1.5}, "queue": "default", "priority": 0}
HTTP_JOB = {
    "task": "http",
    "payload": {
        "method": "POST",
        "url": "https://example.com/hook",
        "json": {"hello": "world"},
        "expect": [200, 201],
    },
    "max_attempts": 3,
    "timeout": 30,
    "idempotency_key": "order-1234-receipt",
    "notify": {
        "webhook": {"url": "https://example.com/done", "secret": "s3cret", "on": ["failed"]}
    },
}

IdempotencyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        max_length=200,
        min_length=1,
        pattern=r"^[\x21-\x7e][\x20-\x7e]*$",
        description="Same as `idempotency_key` in the body.",
    ),
]


class JobsController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @post(
        "/",
        operation_id="job_submit",
        summary="Submit a job",
        status_code=201,
        guards=SUBMITTER,
        responses={
            200: ResponseSpec(
                Job, description="An idempotent replay: the job the key created before."
            ),
            **error_responses(403, 409),
        },
    )
    async def submit_one(
        self,
        data: Annotated[JobSubmit, example_body("a sleep job", SLEEP_JOB, http_job=HTTP_JOB)],
        conn: Conn,
        principal: Caller,
        catalog: Catalog,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response[Job]:
        """Enqueue one job in the caller's tenant. 201 with the job; 200 with the existing
        job when its idempotency key was used before for the same request (409 for a
        different one)."""
        if idempotency_key is not None:
            if data.idempotency_key not in (None, idempotency_key):
                raise invalid([("idempotency_key", "differs from the Idempotency-Key header")])
            data.idempotency_key = idempotency_key
        job, created = await service.submit_one(conn, principal, data, catalog)
        return Response(job, status_code=201 if created else 200)

    @post(
        "/batch",
        operation_id="job_submit_batch",
        summary="Submit many jobs in one transaction",
        status_code=201,
        guards=SUBMITTER,
        opt={"large_body": True},  # SLUICE_MAX_BATCH_BODY_BYTES, see sluice.http.limits
        responses={
            200: ResponseSpec(BatchResult, description="Every job was a replay."),
            **error_responses(403, 409),
        },
    )
    async def submit_batch(
        self,
        data: Annotated[
            JobBatch, example_body("two jobs", {"jobs": [SLEEP_JOB, {"task": "noop"}]})
        ],
        conn: Conn,
        principal: Caller,
        catalog: Catalog,
        settings: Settings,
    ) -> Response[BatchResult]:
        """Enqueue up to SLUICE_MAX_BATCH_JOBS jobs in one statement: all or none. The
        answer lists their ids in the order given."""
        if len(data.jobs) > settings.max_batch_jobs:
            raise invalid([("jobs", f"at most {settings.max_batch_jobs} jobs per batch")])
        done = await service.submit_batch(conn, principal, data.jobs, catalog)
        created = sum(s.created for s in done)
        body = BatchResult(ids=[s.id for s in done], created=created, existing=len(done) - created)
        return Response(body, status_code=201 if created else 200)

    @get(
        "/",
        operation_id="job_list",
        summary="List jobs",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_jobs(
        self,
        read_conn: ReadConn,
        principal: Caller,
        states: Annotated[
            list[JobState] | None, QueryParameter(name="state", description="Any of these states.")
        ] = None,
        queue: Annotated[str | None, QueryParameter(max_length=QUEUE_NAME.max_length)] = None,
        task: Annotated[str | None, QueryParameter(max_length=TASK_NAME.max_length)] = None,
        run_id: Annotated[int | None, QueryParameter(ge=1, le=BIGINT_MAX)] = None,
        created_after: Annotated[
            datetime | None, QueryParameter(description="Created at or after.")
        ] = None,
        created_before: Annotated[
            datetime | None, QueryParameter(description="Created before.")
        ] = None,
        tenant: Annotated[
            str | None,
            QueryParameter(
                max_length=TENANT_NAME.max_length, description="Admins only: one tenant."
            ),
        ] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Page[Job]:
        """Jobs of the caller's tenant, newest first, keyset-paginated."""
        where = JobFilter(
            tenant=tenant,
            states=states,
            queue=queue,
            task=task,
            run_id=run_id,
            created_after=created_after,
            created_before=created_before,
            before_id=decode_cursor(cursor),
            limit=limit + 1,
        )
        jobs = await service.list_jobs(read_conn, principal, where)
        return page(jobs, limit)

    @get(
        "/{job_id:int}",
        operation_id="job_get",
        summary="Get a job with its attempts",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def get_job(
        self, job_id: IdPath, state: State, principal: Caller, wait: WaitParam = None
    ) -> JobDetail:
        """The job, its parents, every attempt (worker, times, outcome, error, output tail).
        With `wait`, answered once the job has ended or the wait is over (a long-poll)."""
        return await service.job_detail_waiting(state, principal, job_id, wait_seconds(wait))

    @post(
        "/{job_id:int}/cancel",
        operation_id="job_cancel",
        summary="Cancel a job",
        status_code=200,
        guards=SUBMITTER,
        responses=error_responses(403, 404, 409),
    )
    async def cancel(self, job_id: IdPath, conn: Conn, principal: Caller) -> Job:
        """Cancel a job that has not finished; a running one is stopped by its worker.
        Its pending descendants are cancelled too (reason `upstream_failed`)."""
        return await service.cancel(conn, principal, job_id)

    @post(
        "/{job_id:int}/retry",
        operation_id="job_retry",
        summary="Retry a failed or cancelled job",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403, 404, 409),
    )
    async def retry(self, job_id: IdPath, conn: Conn, principal: Caller) -> Job:
        """Give a failed or cancelled job fresh attempts (resolving its dead letter); the
        descendants it had cancelled come back."""
        return await service.retry(conn, principal, job_id)


Minutes = Annotated[
    int, QueryParameter(ge=1, le=1440, description="How far back to look, in minutes.")
]
QueueFilter = Annotated[
    str | None,
    QueryParameter(max_length=QUEUE_NAME.max_length, description="One queue (default: all)."),
]


class JobStatsController(Controller):
    """Read from the jobs table at request time, so every API process answers the same."""

    path = "/jobs"
    tags = ["jobs"]

    @get(
        "/throughput",
        operation_id="job_throughput",
        summary="Jobs finished per minute",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def throughput(
        self,
        read_conn: ReadConn,
        principal: Caller,
        minutes: Minutes = 60,
        queue: QueueFilter = None,
    ) -> Throughput:
        """Jobs of the caller's tenant that finished in each of the last `minutes` minutes
        (the current one included), by outcome: succeeded, failed (dead-lettered; attempts
        that were retried are not counted), cancelled."""
        return Throughput(items=await service.throughput(read_conn, principal, minutes, queue))

    @get(
        "/wait-times",
        operation_id="job_wait_times",
        summary="How long jobs wait for a worker",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def wait_times(
        self,
        read_conn: ReadConn,
        principal: Caller,
        minutes: Minutes = 60,
        queue: QueueFilter = None,
    ) -> WaitTimes:
        """Percentiles (50, 90, 99, max) of the seconds between a job becoming runnable
        (its run_at, or its last parent finishing) and a worker claiming it, for the
        caller's jobs that started in the last `minutes` minutes: still running, or among
        the newest 10,000 finished."""
        return await service.wait_times(read_conn, principal, minutes, queue)


router = Router(path="/", route_handlers=[JobsController, JobStatsController])
