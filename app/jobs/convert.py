"""Database rows to job resources, with secrets masked."""

from __future__ import annotations

from typing import Any

import msgspec

from app.jobs.schemas import Job, JobDetail
from app.redact import redact


def to_job(row: dict[str, Any]) -> Job:
    return msgspec.convert(
        {**row, "payload": redact(row["payload"]), "notify": redact(row["notify"])}, Job
    )


def to_job_detail(row: dict[str, Any], parents: list[int], attempts: list[dict]) -> JobDetail:
    return msgspec.convert(
        {
            **row,
            "payload": redact(row["payload"]),
            "notify": redact(row["notify"]),
            "depends_on": parents,
            "attempts": attempts,
            "output": attempts[-1]["output"] if attempts else None,
        },
        JobDetail,
    )
