"""One JSON error shape for every failure the API answers, and the mapping of
database errors a client can cause onto it.

    {"status": 422, "error": "validation_failed", "message": "...",
     "errors": [{"field": "jobs[3].payload.seconds", "message": "must be a number"}]}

`field` is a path into the request (body fields as written, query and path
parameters by name); `errors` is empty when no single field is to blame.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from psycopg import errors as pg
from psycopg_pool import PoolClosed, PoolTimeout

from sluice.core.db import pooler_lost_statement
from sluice.core.problems import named_field

log = logging.getLogger("sluice.api")
T = TypeVar("T")


class FieldError(msgspec.Struct, frozen=True):
    """One problem with one field of the request."""

    field: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    """The body of every error response."""

    status: int
    error: str
    message: str
    errors: list[FieldError] = []


CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class Refusal(Exception):
    """Raise to refuse a request with an error answer; `errors` name the fields at fault.
    (Not the REST client's sluice.client.ApiError, which is such an answer received.)"""

    def __init__(
        self,
        status: int,
        message: str,
        errors: Iterable[FieldError] = (),
        *,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = list(errors)
        self.code = code or CODES.get(status, "error")


def invalid(problems: Iterable[tuple[str, str]]) -> Refusal:
    """A 422 listing every (field, message) problem at once."""
    errors = [FieldError(f, m) for f, m in problems]
    return Refusal(422, _summary(errors), errors)


def _summary(errors: list[FieldError]) -> str:
    if len(errors) == 1:
        return f"{errors[0].field}: {errors[0].message}"
    return f"The request has {len(errors)} problems."


def not_found(what: str) -> Refusal:
    return Refusal(404, f"{what} not found")


def found(value: T | None, what: str) -> T:
    """`value`, or a 404 naming `what` when there is none (a row the caller may not see)."""
    if value is None:
        raise not_found(what)
    return value


def _respond(
    status: int,
    message: str,
    errors: list[FieldError],
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[ErrorBody]:
    body = ErrorBody(
        status=status, error=code or CODES.get(status, "error"), message=message, errors=errors
    )
    return Response(body, status_code=status, headers=dict(headers or {}))


def handle_refusal(_: Request, exc: Refusal) -> Response[ErrorBody]:
    return _respond(exc.status, exc.message, exc.errors, exc.code)


# Litestar names a body field like `$.jobs[0].priority` or `priority`; show the path alone.
_JSON_PATH = re.compile(r"^\$\.?")
_AT_PATH = re.compile(r" - at `(\$[^`]*)`$")


def _field_errors(exc: ValidationException) -> list[FieldError]:
    found: list[FieldError] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key") or "")
        if match := _AT_PATH.search(message):
            key = key or match.group(1)
            message = message[: match.start()]
        # Litestar calls the whole body `data` (the handler's parameter name).
        path = "" if key == "data" else _JSON_PATH.sub("", key)
        if named := named_field(message):
            field, message = named
            path = f"{path}.{field}" if path else field
        found.append(FieldError(path or "body", message))
    return found


def handle_validation(_: Request, exc: ValidationException) -> Response[ErrorBody]:
    errors = _field_errors(exc)
    if not errors:
        # Litestar raises ValidationException for bodies that are not JSON at all.
        return _respond(400, str(exc.detail), [])
    return _respond(422, _summary(errors), errors)


def handle_http(_: Request, exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    message = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
    return _respond(status, message, [], headers=headers)


# SQL constraint (or RAISE ... CONSTRAINT) names, as raised by the engine, and
# the request field each one is about. The API validates first, so reaching
# one of these means a race or a rule only the database can check.
CONSTRAINT_FIELDS = {
    "task_name_valid": "task",
    "queue_name_valid": "queue",
    "tenant_name_valid": "tenant",
    "notify_spec_valid": "notify",
    "jobs_max_attempts_range": "max_attempts",
    "jobs_backoff_valid": "backoff",
    "jobs_backoff_range": "backoff_base",
    "jobs_backoff_max": "backoff_max",
    "jobs_timeout_positive": "timeout",
    "jobs_timeout_max": "timeout",
    "jobs_run_at_range": "run_at",
    "jobs_payload_depth": "payload",
    "job_edges_same_tenant": "depends_on",
    "dags_definition_depth": "definition",
    "dag_runs_params_depth": "params",
    "jobs_inserted_pending": "state",
    "job_edges_acyclic": "depends_on",
    "job_edges_no_self_loop": "depends_on",
    "job_edges_child_pending": "depends_on",
    "job_edges_parent_alive": "depends_on",
    "job_edges_parent_id_fkey": "depends_on",
    "queues_concurrency_limit_positive": "limit",
    "dags_name_valid": "name",
    "dags_definition_object": "definition",
    "dag_runs_nodes_present": "nodes",
    "dag_runs_parents_known": "nodes",
    "dag_runs_nodes_valid": "nodes",
    "schedules_name_valid": "name",
    "schedules_one_target": "job",
    "schedules_job_has_task": "job.task",
    "schedules_misfire_valid": "misfire",
    "schedules_tenant_name_key": "name",
    # DAG data flow (sql/schema/33_dag_runs.sql, 34_dataflow.sql).
    "template_renders": "params",
    "dag_runs_params_object": "params",
    "flow_spec_valid": "definition",
    "dag_runs_concurrency_positive": "concurrency",
    "dag_runs_timeout_positive": "timeout",
    "result_size": "payload",
}


def handle_database(_: Request, exc: pg.Error) -> Response[ErrorBody]:
    diag = exc.diag
    constraint = diag.constraint_name or ""
    field = CONSTRAINT_FIELDS.get(constraint, diag.column_name or "body")
    detail = diag.message_primary or str(exc)
    if isinstance(exc, pg.UniqueViolation):
        return _respond(409, f"{field}: already exists", [FieldError(field, "already exists")])
    if isinstance(exc, pg.NoDataFound):
        return _respond(404, detail, [])
    if isinstance(exc, pg.ProgramLimitExceeded) and constraint in CONSTRAINT_FIELDS:
        return _respond(413, f"{field}: {detail}", [FieldError(field, detail)])
    if isinstance(exc, pg.ObjectInUse):
        # The engine refuses to act on rows in use (a rerun of running nodes).
        return _respond(409, detail, [])
    if isinstance(exc, pg.IntegrityError | pg.DataError):
        # Check and foreign-key violations, and values PostgreSQL cannot store
        # (NUL characters, out-of-range numbers and dates): the client's input.
        return _respond(422, f"{field}: {detail}", [FieldError(field, detail)])
    if (reason := unavailable_reason(exc)) is not None:
        return _unavailable(reason, exc)
    return handle_unexpected(_, exc)


# How long a client should wait before it tries again after a 503 (Retry-After):
# long enough not to hammer a database that is failing over, short enough that a
# blip costs little.
RETRY_AFTER_SECONDS = 2

# SQLSTATEs (beyond every OperationalError) that mean "the database cannot serve
# this now; the same request may succeed later".
_SHUTTING_DOWN = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, cannot connect now


def unavailable_reason(exc: BaseException) -> str | None:
    """Why `exc` means the database cannot serve the request now (a 503 the client
    may retry), or None when it is something else."""
    if isinstance(exc, PoolTimeout):
        return "no connection to it within the API's wait (SLUICE_API_DB_TIMEOUT)"
    if isinstance(exc, PoolClosed):
        return "the API is shutting down"
    if isinstance(exc, pg.ReadOnlySqlTransaction):
        # 25006: the URL reached a standby, as after a failover (see docs/scaling.md).
        return "it is read-only (a standby: a failover may be under way)"
    if isinstance(exc, pg.QueryCanceled):
        return "it did not finish in time (SLUICE_API_STATEMENT_TIMEOUT)"
    if pooler_lost_statement(exc):
        # Inside a transaction the statement cannot be sent again: the transaction
        # is aborted. Preparing is off for this process from now on, so the
        # client's retry runs unprepared.
        return "a pooler lost a prepared statement (prepared statements are now off)"
    if not isinstance(exc, pg.OperationalError):
        return None
    sqlstate = exc.sqlstate or ""
    if not sqlstate or sqlstate.startswith("08"):
        # No SQLSTATE: the client side saw the connection fail or break.
        return "the connection to it failed"
    if sqlstate in _SHUTTING_DOWN:
        return "it is shutting down or starting up"
    # Out of connections, memory or disk; a deadlock or serialization failure.
    return "it cannot serve this request now"


def _unavailable(reason: str, exc: BaseException) -> Response[ErrorBody]:
    log.warning("database unavailable (%s): %s", reason, exc)
    return _respond(
        503,
        f"The database is unavailable: {reason}. Retry in {RETRY_AFTER_SECONDS} s.",
        [],
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def handle_unexpected(request: Request, exc: Exception) -> Response[ErrorBody]:
    log.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(500, "Internal error; the server log has the details.", [])


EXCEPTION_HANDLERS: dict[Any, Any] = {
    Refusal: handle_refusal,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    pg.Error: handle_database,  # also the pool's PoolTimeout and PoolClosed
    Exception: handle_unexpected,
}


_DESCRIPTIONS = {
    400: "The request is malformed (not JSON or YAML, a bad cursor...).",
    401: "No token, or the token is invalid or expired.",
    403: "The token's role does not allow this.",
    404: "No such resource (in your tenant).",
    409: "Conflict: the idempotency key was used with a different request, or the name exists.",
    413: "The request body is larger than the limit.",
    422: "A field is invalid; `errors` names each one.",
    503: "The database is unavailable (unreachable, read-only during a failover, or too "
    "slow); `Retry-After` says when to try again.",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses an operation can answer (besides the usual)."""
    wanted = sorted({400, 401, 403, 413, 422, 503, *statuses})
    return {
        status: ResponseSpec(
            data_container=ErrorBody,
            description=_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            generate_examples=False,
            examples=[
                Example(
                    summary=CODES[status],
                    value={
                        "status": status,
                        "error": CODES[status],
                        "message": "priority: Expected `int`, got `str`"
                        if status == 422
                        else _DESCRIPTIONS.get(status, ""),
                        "errors": [{"field": "priority", "message": "Expected `int`, got `str`"}]
                        if status == 422
                        else [],
                    },
                )
            ],
        )
        for status in wanted
    }
