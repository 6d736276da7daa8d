"""`sluice submit FILE`: submit a DAG, a job, a batch or a cron schedule from YAML/JSON."""

from __future__ import annotations

import asyncio
from typing import Any, TextIO

import click
import yaml

from sluice.cli.options import api_call
from sluice.cli.table import when
from sluice.client import ApiError, Client
from sluice.core.jobs import TERMINAL_STATES

POLL_SECONDS = 0.5
# One long-poll of a job (GET /jobs/{id}?wait=), well inside the client's timeout.
JOB_WAIT_SECONDS = 25


async def _long_poll(client: Client, path: str, seconds: float) -> Any:
    """GET `path` once it has ended or after `seconds`; when the API has too many
    waits already (503), a plain GET after `seconds`."""
    try:
        return await client.get(path, wait=f"{seconds:g}s")
    except ApiError as exc:
        if exc.status != 503:
            raise
    await asyncio.sleep(seconds)
    return await client.get(path)


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--param")
        params[name] = value
    return params


@click.command()
@click.argument("file", type=click.File("r"))
@click.option(
    "-p", "--param", multiple=True, metavar="NAME=VALUE", help="A run parameter (repeatable)."
)
@click.option(
    "--wait", is_flag=True, help="Follow the run (or job) until it ends; exit 0 only on success."
)
@api_call
async def submit(client: Client, file: TextIO, param: tuple[str, ...], wait: bool) -> None:
    """Submit FILE (YAML or JSON) through the API.

    \b
    What FILE holds decides what happens:
      nodes: [...]          a DAG run (saved as a versioned DAG first when it has `name`)
      task: ...             one job
      jobs: [...]           a batch of jobs, in one transaction
      cron: ...             a cron schedule
    A DAG file may carry default `params`; --param overrides them.
    """
    try:
        document = yaml.safe_load(file)
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{file.name} is not valid YAML/JSON: {exc}") from None
    if not isinstance(document, dict):
        raise click.ClickException(
            f"{file.name} must hold a mapping (a DAG, job, batch or schedule)"
        )

    if "nodes" in document:
        run = await start_run(client, document, parse_params(param))
        click.echo(f"run {run['id']} started ({run['nodes']} nodes)")
        if wait:
            await follow_run(client, run["id"])
    elif "task" in document:
        job = await client.post("/jobs", document)
        click.echo(f"job {job['id']} {job['state']}")
        if wait:
            await follow_job(client, job["id"])
    elif "jobs" in document:
        batch = await client.post("/jobs/batch", document)
        click.echo(f"{batch['created']} jobs submitted ({batch['existing']} already existed)")
    elif "cron" in document:
        schedule = await client.post("/schedules", document)
        upcoming = schedule["next_fire_at"] or "computed by the scheduler within seconds"
        click.echo(f"schedule {schedule['id']} ({schedule['name']}) saved; next run: {upcoming}")
    else:
        raise click.ClickException(f"{file.name}: expected `nodes`, `task`, `jobs` or `cron`")


async def start_run(client: Client, document: dict[str, Any], params: dict[str, str]) -> dict:
    document = dict(document)
    name = document.pop("name", None)
    start = {"params": {**(document.pop("params", None) or {}), **params}}
    if notify := document.pop("notify", None):
        start["notify"] = notify
    if name is None:
        return await client.post("/runs", {"definition": document, **start})
    await client.put(f"/dags/{name}", document)
    return await client.post(f"/dags/{name}/runs", start)


STATE_STYLES = {
    "blocked": "dim",
    "scheduled": "cyan",
    "ready": "blue",
    "running": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "waiting": "cyan",
    "skipped": "dim",
    "queued": "dim",
}


def node_note(node: dict) -> str:
    """What a node's state leaves unsaid: what it waits for, a mapped node's
    elements, why it was skipped or ended."""
    counts = node.get("map")
    if counts and counts["total"]:
        done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        text = f"map: {done}/{counts['total']} done"
        if counts["failed"] or counts["cancelled"]:
            text += f" ({counts['failed']} failed, {counts['cancelled']} cancelled)"
        return text
    waiting = node.get("waiting_for") if node["state"] == "waiting" else None
    if waiting == "signal":
        return "waiting for a signal" + (
            f" (until {when(node['wakes_at'])})" if node["wakes_at"] else ""
        )
    if waiting == "duration":
        return f"waiting until {when(node['wakes_at'])}"
    if node["state"] == "skipped":
        return f"skipped: {node.get('reason') or 'condition false'}"
    if node.get("last_error"):
        return node["last_error"].strip().splitlines()[0][:100]
    return node.get("reason") or ""


def render_run(graph: dict):
    """A rich renderable: the run's progress bar and every node's state."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    run = graph["run"]
    header = Text.assemble(
        (f"run {run['id']} ", "bold"),
        (run["state"], STATE_STYLES.get(run["state"], "")),
        f"  {run['percent_done']:.0f}% of {run['nodes']} nodes done",
    )
    if run["state"] == "queued":
        header.append("  (queued: waits for a concurrency slot)")
    table = Table("node", "state", "attempt", "job", "", box=None, pad_edge=False)
    for node in graph["nodes"][:40]:
        table.add_row(
            node["id"],
            Text(node["state"], STATE_STYLES.get(node["state"], "")),
            f"{node['attempt']}/{node['max_attempts']}",
            str(node["job_id"]),
            node_note(node),
        )
    if len(graph["nodes"]) > 40:
        table.add_row(f"... {len(graph['nodes']) - 40} more", "", "", "", "")
    # The command that ends each signal wait, on a line of its own to copy.
    hints = [
        Text(f"{node['id']} waits for a signal: sluice runs signal {run['id']} {node['id']}")
        for node in graph["nodes"]
        if node["state"] == "waiting" and node.get("waiting_for") == "signal"
    ]
    return Group(header, ProgressBar(total=100, completed=run["percent_done"]), table, *hints)


async def follow_run(client: Client, run_id: int) -> None:
    """Live progress until the run ends; exit status 0 only when it succeeded."""
    from rich.console import Console
    from rich.live import Live

    from sluice.core.waiting import RUN_ENDED

    graph = await client.get(f"/runs/{run_id}")
    console = Console()
    with Live(render_run(graph), console=console, refresh_per_second=8) as live:
        # A queued run has not started yet: it is followed too.
        while graph["run"]["state"] not in RUN_ENDED:
            # The long-poll answers at the run's end, else after POLL_SECONDS (progress).
            graph = await _long_poll(client, f"/runs/{run_id}", POLL_SECONDS)
            live.update(render_run(graph))
    if not console.is_terminal:
        console.line()  # Live's last render ends without one when not on a terminal
    echo_results(graph, console)
    if graph["run"]["state"] != "succeeded":
        raise SystemExit(1)


def echo_results(graph: dict, console) -> None:
    """The results of the run's last nodes (those no node depends on): the start of
    each (GET /runs/{id}/nodes/{node}/result has it all). Printed by the console that
    showed the run, so they start on a line of their own."""
    parents = {edge["parent"] for edge in graph["edges"]}
    for node in graph["nodes"]:
        if node["id"] in parents or node["state"] != "succeeded":
            continue
        preview = node.get("result_preview")
        if preview is None:
            continue
        more = " …" if node.get("result_truncated") else ""
        console.print(
            f"{node['id']}: {preview}{more}", markup=False, highlight=False, soft_wrap=True
        )


async def follow_job(client: Client, job_id: int) -> None:
    job = await client.get(f"/jobs/{job_id}")
    while job["state"] not in TERMINAL_STATES:
        job = await _long_poll(client, f"/jobs/{job_id}", JOB_WAIT_SECONDS)
    from sluice.cli.table import one_line

    error = f": {one_line(job['last_error'])}" if job["last_error"] else ""
    click.echo(f"job {job_id} {job['state']}{error}")
    if job["state"] != "succeeded":
        raise SystemExit(1)
