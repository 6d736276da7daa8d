"""`sluice status ID`: one job, with its attempts."""

from __future__ import annotations

import json

import click

from sluice.cli.options import api_call
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
        click.echo(f"last error: {job['last_error']}")
    for attempt in job["attempts"]:
        error = f"  {attempt['error']}" if attempt.get("error") else ""
        click.echo(f"  #{attempt['attempt']} {attempt['outcome']} on {attempt['worker_id']}{error}")
    if job["output"]:
        click.echo("output:\n" + job["output"])
