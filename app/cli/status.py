"""`sluice status ID`: one job, with its attempts."""

from __future__ import annotations

import json

import click

from sluice.cli.options import api_call
from sluice.cli.table import echo_table, one_line, when
from sluice.client import Client


@click.command()
@click.argument("job_id", type=int)
@api_call
async def status(client: Client, job_id: int) -> None:
    """Show job JOB_ID: state, attempts, result or error, output tail."""
    job = await client.get(f"/jobs/{job_id}")
    click.echo(f"job {job['id']}  {job['task']}  queue={job['queue']}  state={job['state']}")
    click.echo(f"attempt {job['attempt']}/{job['max_attempts']}  created {job['created_at']}")
    if job["run_id"]:
        click.echo(f"run {job['run_id']} node {job['node']}")
    if job["depends_on"]:
        click.echo(f"depends on {', '.join(map(str, job['depends_on']))}")
    if job["result"] is not None:
        click.echo(f"result {json.dumps(job['result'])}")
    if job["last_error"]:
        click.echo(f"last error: {one_line(job['last_error'])}")
    click.echo("")
    echo_table(
        ["attempt", "outcome", "worker", "started", "error"],
        (
            [a["attempt"], a["outcome"], a["worker_id"], when(a.get("started_at")),
             one_line(a.get("error")) if a.get("error") else "-"]
            for a in job["attempts"]
        ),
        empty="No attempt yet.",
        numeric=(0,),
    )  # fmt: skip
    if job["output"]:
        click.echo("output:\n" + job["output"])
