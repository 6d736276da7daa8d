"""`sluice dlq list | retry ID | discard ID`: the dead-letter queue."""

from __future__ import annotations

import click

from sluice.cli.options import api_call
from sluice.cli.table import echo_table, one_line, when
from sluice.client import Client


@click.group()
def dlq() -> None:
    """The dead-letter queue: jobs whose attempts ran out."""


@dlq.command("list")
@click.option("--queue", help="Only this queue.")
@click.option("--limit", type=int, default=50, show_default=True)
@api_call
async def list_(client: Client, queue: str | None, limit: int) -> None:
    """Unresolved entries, newest first."""
    page = await client.get("/dlq", queue=queue, limit=limit)
    echo_table(
        ["job", "task", "queue", "attempts", "failed at", "error"],
        (
            [e["job_id"], e["task"], e["queue"], e["attempts"], when(e["failed_at"]),
             one_line(e["last_error"] or e.get("reason"))]
            for e in page["items"]
        ),
        empty="The dead-letter queue is empty.",
        numeric=(0, 3),
    )  # fmt: skip


@dlq.command()
@click.argument("job_id", type=int)
@api_call
async def retry(client: Client, job_id: int) -> None:
    """Retry JOB_ID with fresh attempts."""
    job = await client.post(f"/dlq/{job_id}/retry")
    left = job["max_attempts"] - job["attempt"]
    click.echo(f"job {job_id} is {job['state']} again ({left} attempts left)")


@dlq.command()
@click.argument("job_id", type=int)
@api_call
async def discard(client: Client, job_id: int) -> None:
    """Resolve JOB_ID's entry without retrying (the job stays failed)."""
    await client.post(f"/dlq/{job_id}/discard")
    click.echo(f"job {job_id} discarded from the dead-letter queue")
