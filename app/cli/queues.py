"""`sluice queues list | pause NAME | resume NAME | limit NAME N`."""

from __future__ import annotations

import click

from sluice.cli.options import api_call
from sluice.cli.table import echo_table
from sluice.client import Client
from sluice.core.jobs import JOB_STATES as STATES


@click.group()
def queues() -> None:
    """Queues: depth per state, pause, resume, concurrency limit."""


@queues.command("list")
@api_call
async def list_(client: Client) -> None:
    """Every queue with its jobs per state."""
    page = await client.get("/queues")
    echo_table(
        ["queue", *STATES, "paused", "limit"],
        (
            [q["name"], *(q[s] for s in STATES), "yes" if q["paused"] else "no",
             q["concurrency_limit"] or "-"]
            for q in page["items"]
        ),
        empty="No queues yet: a queue appears with its first job.",
        numeric=range(1, len(STATES) + 1),
    )  # fmt: skip


@queues.command()
@click.argument("name")
@api_call
async def pause(client: Client, name: str) -> None:
    """Stop every worker claiming from NAME (running jobs finish)."""
    await client.post(f"/queues/{name}/pause")
    click.echo(f"queue {name} paused")


@queues.command()
@click.argument("name")
@api_call
async def resume(client: Client, name: str) -> None:
    """Let workers claim from NAME again."""
    await client.post(f"/queues/{name}/resume")
    click.echo(f"queue {name} resumed")


@queues.command()
@click.argument("name")
@click.argument("limit", type=int, required=False)
@api_call
async def limit(client: Client, name: str, limit: int | None) -> None:
    """At most LIMIT jobs of NAME run at once (no LIMIT: unlimited)."""
    await client.put(f"/queues/{name}/concurrency", {"limit": limit})
    click.echo(f"queue {name}: " + (f"at most {limit} at once" if limit else "no limit"))
