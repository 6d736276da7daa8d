"""/api/v1/jobs: submit one or a batch, list, get, cancel, retry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, QueryParameter

from sluice.auth import OPERATOR, SUBMITTER, VIEWER
from sluice.core.queries import Q
from sluice.deps import Caller, Catalog, Conn, Settings
from sluice.errors import ApiError, error_responses, invalid
from sluice.jobs.convert import get_job, job_row, to_job, to_job_detail
from sluice.jobs.schemas import BatchResult, Job, JobBatch, JobDetail, JobSubmit
from sluice.jobs.submit import submit
from sluice.openapi import example_body
from sluice.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.resources import BIGINT_MAX, IdPath, JobState

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
        [job] = await submit(conn, principal, [data], catalog)
        return Response(
            await get_job(conn, principal, job.id), status_code=201 if job.created else 200
        )

    @post(
        "/batch",
        operation_id="job_submit_batch",
        summary="Submit many jobs in one transaction",
        status_code=201,
        guards=SUBMITTER,
        opt={"large_body": True},  # SLUICE_MAX_BATCH_BODY_BYTES, see app.limits
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
        done = await submit(conn, principal, data.jobs, catalog, where="jobs")
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
        conn: Conn,
        principal: Caller,
        states: Annotated[
            list[JobState] | None, QueryParameter(name="state", description="Any of these states.")
        ] = None,
        queue: Annotated[str | None, QueryParameter(max_length=64)] = None,
        task: Annotated[str | None, QueryParameter(max_length=200)] = None,
        run_id: Annotated[int | None, QueryParameter(ge=1, le=BIGINT_MAX)] = None,
        created_after: Annotated[
            datetime | None, QueryParameter(description="Created at or after.")
        ] = None,
        created_before: Annotated[
            datetime | None, QueryParameter(description="Created before.")
        ] = None,
        tenant: Annotated[
            str | None, QueryParameter(max_length=64, description="Admins only: one tenant.")
        ] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Page[Job]:
        """Jobs of the caller's tenant, newest first, keyset-paginated."""
        rows = await Q.job_list(
            conn,
            tenant=tenant if principal.is_admin and tenant else principal.scope,
            states=states,
            queue=queue,
            task=task,
            run_id=run_id,
            created_after=created_after,
            created_before=created_before,
            before_id=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page([to_job(r) for r in rows], limit)

    @get(
        "/{job_id:int}",
        operation_id="job_get",
        summary="Get a job with its attempts",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def get_job(self, job_id: IdPath, conn: Conn, principal: Caller) -> JobDetail:
        """The job, its parents, every attempt (worker, times, outcome, error, output tail)."""
        row = await job_row(conn, principal, job_id)
        attempts = await Q.job_attempts(conn, id=job_id)
        parents = await Q.job_parent_ids(conn, id=job_id)
        return to_job_detail(row, parents, attempts)

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
        job = await get_job(conn, principal, job_id)
        if not await Q.job_cancel(conn, ids=[job_id], reason="cancelled"):
            raise ApiError(
                409, f"job {job_id} is already {job.state}; only unfinished jobs can be cancelled"
            )
        return await get_job(conn, principal, job_id)

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
        job = await get_job(conn, principal, job_id)
        if not await Q.job_retry(conn, ids=[job_id]):
            raise ApiError(
                409,
                f"job {job_id} is {job.state}; only failed or cancelled jobs "
                "whose parents can still succeed can be retried",
            )
        return await get_job(conn, principal, job_id)
