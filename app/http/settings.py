"""Settings of the REST API process (`sluice api`), read from `SLUICE_*` variables."""

from __future__ import annotations

import dataclasses

from sluice.auth.settings import AuthSettings
from sluice.core.config import parse_bool, setting
from sluice.core.durations import duration_setting

MIB = 1024 * 1024


def positive_duration(value: str) -> float:
    """A duration setting that must be more than zero."""
    seconds = duration_setting(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration above zero, got {value!r}")
    return seconds


@dataclasses.dataclass(frozen=True)
class ApiSettings(AuthSettings):
    """Everything `create_app` needs; the defaults suit local use."""

    host: str = setting("SLUICE_API_HOST", "127.0.0.1", "Address `sluice api` listens on.")
    port: int = setting("SLUICE_API_PORT", 8000, "Port `sluice api` listens on.", int)
    pool_size: int = setting(
        "SLUICE_API_POOL_SIZE", 10, "Most database connections the API process holds open.", int
    )
    db_timeout: float = setting(
        "SLUICE_API_DB_TIMEOUT",
        3.0,
        "Longest a request waits for the database to be reachable: for a free pooled "
        "connection, for a new connection, for the network to acknowledge what was sent or "
        "to answer keepalive probes. Past it the client gets 503 with Retry-After.",
        positive_duration,
    )
    statement_timeout: float = setting(
        "SLUICE_API_STATEMENT_TIMEOUT",
        30.0,
        "Longest a request may keep its database connection busy with statements: then the "
        "statement is cancelled (the connection cut if the server does not let go within "
        "SLUICE_API_DB_TIMEOUT) and the client gets 503 with Retry-After. 0: no limit.",
        duration_setting,
    )
    max_body_bytes: int = setting(
        "SLUICE_MAX_BODY_BYTES", MIB, "Largest request body accepted (413 past it).", int
    )
    max_batch_body_bytes: int = setting(
        "SLUICE_MAX_BATCH_BODY_BYTES",
        32 * MIB,
        "Largest body of a batch submission or a DAG definition (POST /api/v1/jobs/batch, "
        "PUT /api/v1/dags/{name}, POST /api/v1/runs; 413 past it).",
        int,
    )
    max_batch_jobs: int = setting(
        "SLUICE_MAX_BATCH_JOBS", 50_000, "Most jobs in one batch submission.", int
    )
    max_waits: int = setting(
        "SLUICE_API_MAX_WAITS",
        1000,
        "Most requests of this process waiting at once for a job or run to end "
        "(`GET /api/v1/jobs/{id}?wait=30s`); past it they are refused with a 503. A wait "
        "holds no database connection.",
        int,
    )
    allow_shell: bool = setting(
        "SLUICE_ALLOW_SHELL",
        False,
        "Accept `shell` tasks (from admins only). Off by default: a shell task runs any "
        "command on the worker host.",
        parse_bool,
    )
