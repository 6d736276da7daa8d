"""`sluice runs list | show ID | cancel ID | retry ID`."""

from __future__ import annotations

import click

from sluice.cli.options import api_call
from sluice.cli.submit import follow_run, render_run
from sluice.cli.table import echo_table, when
from sluice.client import Client
from sluice.core.jobs import RUN_STATES


@click.group()
def runs() -> None:
    """DAG runs."""


@runs.command("list")
@click.option("--state", type=click.Choice(RUN_STATES))
@click.option("--limit", type=int, default=20, show_default=True)
@api_call
async def list_(client: Client, state: str | None, limit: int) -> None:
    """Recent runs, newest first."""
    page = await client.get("/runs", state=state, limit=limit)
    echo_table(
        ["run", "dag", "state", "nodes", "succeeded", "failed", "cancelled", "created"],
        (
            [r["id"], r["dag_name"] or "(inline)", r["state"], r["nodes"], r["succeeded"],
             r["failed"], r["cancelled"], when(r["created_at"])]
            for r in page["items"]
        ),
        empty=f"No {state} runs." if state else "No runs yet.",
        numeric=(0, 3, 4, 5, 6),
    )  # fmt: skip


@runs.command()
@click.argument("run_id", type=int)
@click.option("--follow", is_flag=True, help="Keep refreshing until the run ends.")
@api_call
async def show(client: Client, run_id: int, follow: bool) -> None:
    """Every node of RUN_ID and its state."""
    if follow:
        await follow_run(client, run_id)
        return
    from rich.console import Console

    Console().print(render_run(await client.get(f"/runs/{run_id}")))


@runs.command()
@click.argument("run_id", type=int)
@api_call
async def cancel(client: Client, run_id: int) -> None:
    """Cancel every unfinished node of RUN_ID."""
    run = await client.post(f"/runs/{run_id}/cancel")
    click.echo(f"run {run_id} {run['state']}")


@runs.command()
@click.argument("run_id", type=int)
@api_call
async def retry(client: Client, run_id: int) -> None:
    """Retry RUN_ID's failed nodes (their cancelled descendants come back)."""
    run = await client.post(f"/runs/{run_id}/retry")
    click.echo(f"run {run_id} {run['state']}")
