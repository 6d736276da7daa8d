"""`sluice runs list | show ID | cancel ID | retry ID | rerun ID --from NODE |
signal ID NODE | backfill DAG --from T --to T`."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import click

from sluice.cli.options import api_call
from sluice.cli.submit import follow_run, parse_params, render_run
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


@runs.command()
@click.argument("run_id", type=int)
@click.option("--from", "from_", required=True, metavar="NODE", help="The node to rerun from.")
@api_call
async def rerun(client: Client, run_id: int, from_: str) -> None:
    """Run node NODE of RUN_ID and every node below it again.

    The other nodes keep their results; templated payloads are rendered again
    and a mapped node maps again. Refused while any of those nodes is running.
    """
    run = await client.post(f"/runs/{run_id}/rerun", {"from": from_})
    click.echo(f"run {run_id} {run['state']}: {from_} and the nodes below it run again")


def parse_payload(text: str) -> Any:
    """JSON text, or `@FILE` for a file holding JSON (`@-`: standard input)."""
    where = "--payload"
    if text.startswith("@"):
        name = text[1:]
        where = f"--payload {text}"
        try:
            text = click.get_text_stream("stdin").read() if name == "-" else Path(name).read_text()
        except OSError as exc:
            message = f"cannot read {name}: {exc.strerror}"
            raise click.BadParameter(message, param_hint=where) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=where) from None


@runs.command()
@click.argument("run_id", type=int)
@click.argument("node")
@click.option(
    "--payload",
    default="{}",
    show_default=True,
    metavar="JSON|@FILE",
    help="The node's result: JSON text, or @FILE to read it from a file (@- for stdin).",
)
@api_call
async def signal(client: Client, run_id: int, node: str, payload: str) -> None:
    """Signal NODE of RUN_ID, a node waiting for one (`wait: {signal: true}`).

    The node succeeds with the payload as its result, and the nodes after it
    move on. Refused when the node is not waiting for a signal (it timed out,
    or it is not a signal wait).
    """
    value = parse_payload(payload)
    answer = await client.post(f"/runs/{run_id}/nodes/{node}/signal", {"payload": value})
    click.echo(f"node {node} of run {run_id} {answer['state']}")


def parse_time(text: str, *, end: bool) -> datetime:
    """An ISO 8601 time; without an offset it is UTC. A bare date is the start of
    that day, or for `--to` (`end`) its end, so `--to 2026-11-07` includes the 7th."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(), UTC)
        return start + timedelta(days=1, microseconds=-1) if end else start
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date or time "
            "(2026-11-01, 2026-11-01T02:00, 2026-11-01T02:00+01:00)",
            param_hint="--to" if end else "--from",
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@runs.command()
@click.argument("dag")
@click.option("--from", "from_", required=True, metavar="T", help="First time (ISO 8601).")
@click.option("--to", required=True, metavar="T", help="Last time (ISO 8601; a date: its end).")
@click.option("--schedule", metavar="NAME", help="The schedule, when several start DAG.")
@click.option(
    "-p", "--param", multiple=True, metavar="NAME=VALUE", help="A run parameter (repeatable)."
)
@api_call
async def backfill(
    client: Client, dag: str, from_: str, to: str, schedule: str | None, param: tuple[str, ...]
) -> None:
    """Start the runs DAG's cron schedule would have started between two times.

    One run per occurrence, oldest first, each with {{ run.occurrence }} set; an
    occurrence that has a run already (the scheduler's, or an earlier
    backfill's) is not started again. Times without an offset are UTC. The
    DAG's `concurrency` applies: extra runs wait, queued.
    """
    body: dict[str, Any] = {
        "from": parse_time(from_, end=False).isoformat(),
        "to": parse_time(to, end=True).isoformat(),
    }
    if schedule:
        body["schedule"] = schedule
    if param:
        body["params"] = parse_params(param)
    answer = await client.post(f"/dags/{dag}/backfill", body)
    started, existing = answer["runs"], answer["existing"]
    click.echo(f"{len(started)} runs started" + (f": {_ids(started)}" if started else ""))
    if existing:
        click.echo(f"{len(existing)} occurrences had a run already: {_ids(existing)}")


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids))
