"""`sluice queues list | pause NAME | resume NAME | limit NAME N`."""

from __future__ import annotations

import click

from sluice.cli.options import api_call
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
    click.echo(f"{'queue':<20}" + "".join(f"{s:>11}" for s in STATES) + "  paused  limit")
    for q in page["items"]:
        counts = "".join(f"{q[s]:>11}" for s in STATES)
        paused = "yes" if q["paused"] else "no"
        click.echo(f"{q['name']:<20}{counts}  {paused:>6}  {q['concurrency_limit'] or '-'}")


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
