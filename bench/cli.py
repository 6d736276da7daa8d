"""The `python -m bench` command line."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Any

import click

from bench import report
from bench.database import SERVER_SETTINGS, BenchDatabaseError, open_database
from bench.harness import RESULTS, Bench, Record, context
from bench.targets import evaluate, fractions_of_limit

# In the order `all` runs them: limit first, so the others read as fractions of it.
SCENARIOS = ("limit", "enqueue", "drain", "wal", "latency", "dag", "backlog", "bloat", "soak")


def scenario_module(name: str) -> Any:
    return importlib.import_module(f"bench.{name}")


def options_for(name: str, quick: bool, given: dict[str, Any]) -> dict[str, Any]:
    """The scenario's preset (full or quick) overridden by the options given."""
    module = scenario_module(name)
    preset = dict(module.QUICK if quick else module.FULL)
    preset.update({k: v for k, v in given.items() if v is not None})
    return preset


def settings_list(url: str | None, server_settings: str | None) -> list[str]:
    """The server settings to run on, in order: `all` is default, then tuned.
    An external database runs once, on whatever its settings are."""
    if url:
        if server_settings not in (None, "external"):
            raise BenchDatabaseError(
                "--server-settings applies to the embedded server only; a SLUICE_DATABASE_URL "
                "runs on its own settings (they are recorded)"
            )
        return ["external"]
    if server_settings in (None, "default"):
        return ["default"]
    return list(SERVER_SETTINGS) if server_settings == "all" else [server_settings]


async def run_scenarios(
    plan: list[tuple[str, dict[str, Any]]],
    *,
    url: str | None,
    data_dir: Path | None,
    out: Path,
    profile: bool = False,
    reset: bool = False,
    combined: bool = False,
    server_settings: str | None = None,
) -> list[dict[str, Any]]:
    """Run each (scenario, options) on one database per server settings (see
    settings_list); write and return their records (and, with `combined`, one
    more: the whole table with fractions of `limit` and the targets)."""
    documents: list[dict[str, Any]] = []
    by_settings: dict[str, list[dict[str, Any]]] = {}
    stamp = report.stamp()
    for settings in settings_list(url, server_settings):
        opened = open_database(
            url,
            data_dir=data_dir,
            profile=profile,
            reset=reset,
            settings="default" if settings == "external" else settings,
        )
        with opened as (db_url, embedded):
            bench = Bench(db_url, embedded=embedded)
            info = await context(bench)
            info["settings"] = settings
            tag = f"{stamp}-{settings}"
            for name, options in plan:
                await bench.reset()
                if profile:
                    async with bench.connection() as conn:
                        await conn.execute("SELECT pg_stat_statements_reset()")
                bench.say(f"[bold]{name}[/bold] ({settings} settings) {options}")
                record: Record = await scenario_module(name).run(bench, **options)
                if profile:
                    record.details["top_statements"] = await top_statements(bench)
                document = report.write(record, info, out, f"{name}-{tag}")
                documents.append(document)
                by_settings.setdefault(settings, []).append(document)
                bench.say(report.markdown(record, info), markup=False)
    if combined:
        record = combine(by_settings)
        info = {**info, "settings": "+".join(by_settings)}
        documents.append(report.write(record, info, out, f"all-{stamp}"))
        bench.say(report.markdown(record, info), markup=False)
    return documents


async def top_statements(bench: Bench, limit: int = 15) -> list[dict[str, Any]]:
    """pg_stat_statements: the statements that took the most server time."""
    async with bench.connection() as conn:
        cur = await conn.execute(
            "SELECT left(query, 300), calls, rows, round(total_exec_time::numeric, 1),"
            " round((total_exec_time / greatest(rows, 1) * 1000)::numeric, 2)"
            " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT %s",
            (limit,),
        )
        return [
            {"query": q, "calls": c, "rows": r, "total_ms": float(t), "us_per_row": float(u)}
            for q, c, r, t, u in await cur.fetchall()
        ]


def combine(by_settings: dict[str, list[dict[str, Any]]]) -> Record:
    """One record of every scenario's figures on every server settings run, each
    named `<settings>.<scenario>.<figure>`, with fractions of that run's `limit`
    and the targets that apply to those settings marked met or missed."""
    record = Record("all")
    table: dict[str, dict[str, Any]] = {}
    record.details["fraction_of_limit"] = {}
    record.details["targets"] = {}
    record.details["scenarios"] = {}
    for settings, documents in by_settings.items():
        figures: dict[str, float] = {}
        checks: dict[str, int] = {}
        for doc in documents:
            for key, value in doc["figures"].items():
                name = f"{doc['scenario']}.{key}"
                figures[name] = value
                label = doc["labels"].get(key, key)
                prefix = "" if label.startswith(doc["scenario"]) else f"{doc['scenario']}: "
                record.figure(f"{settings}.{name}", value, f"{settings}: {prefix}{label}")
                row = table.setdefault(
                    name, {"figure": prefix + label, "values": {}, "of_limit": {}, "targets": []}
                )
                row["values"][settings] = value
            for key, value in doc["checks"].items():
                checks[f"{doc['scenario']}.{key}"] = value
                record.checks[f"{settings}.{doc['scenario']}.{key}"] = value
        fractions = fractions_of_limit(figures)
        for name, fraction in fractions.items():
            table[name]["of_limit"][settings] = fraction
        targets = evaluate(figures, checks, settings)
        for t in targets:
            if t["figure"] in table:
                table[t["figure"]]["targets"].append({"settings": settings, **t})
        record.details["fraction_of_limit"][settings] = fractions
        record.details["targets"][settings] = targets
        record.details["scenarios"][settings] = {d["scenario"]: d["files"] for d in documents}
        record.notes += [
            f"{settings}: {_verdict(t['met'])}: {t['target']} (measured {t['value']}"
            + ("" if t["bound"] is None else f", bound {report.fmt(t['bound'])}")
            + ")"
            for t in targets
        ]
    record.details["settings"] = list(by_settings)
    record.details["table"] = list(table.values())
    return record


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


# -- click ---------------------------------------------------------------------

# Accepted before the scenario (`bench --server-settings tuned drain`) and after
# it (`bench all --server-settings default`); the one given after wins.
SERVER_SETTINGS_OPTION = click.option(
    "--server-settings",
    type=click.Choice([*SERVER_SETTINGS, "all"]),
    envvar="SLUICE_BENCH_SERVER_SETTINGS",
    help="The embedded server's settings: PostgreSQL's defaults (the default), tuned "
    "(memory and checkpoint spacing raised), or all (each in turn, one combined table) "
    "[env: SLUICE_BENCH_SERVER_SETTINGS].",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="SLUICE_DATABASE_URL",
    metavar="URL",
    help="Run against this database instead of an embedded one [env: SLUICE_DATABASE_URL].",
)
@click.option(
    "--data-dir",
    envvar="SLUICE_BENCH_DATA_DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory of the embedded cluster (default: a temporary one, removed after) "
    "[env: SLUICE_BENCH_DATA_DIR].",
)
@click.option(
    "--out",
    envvar="SLUICE_BENCH_OUT",
    type=click.Path(path_type=Path, file_okay=False),
    default=RESULTS,
    show_default=True,
    help="Where records and charts are written [env: SLUICE_BENCH_OUT].",
)
@SERVER_SETTINGS_OPTION
@click.option(
    "--quick",
    is_flag=True,
    envvar="SLUICE_BENCH_QUICK",
    help="Smaller sizes: minutes instead of a quarter of an hour [env: SLUICE_BENCH_QUICK].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="SLUICE_BENCH_JSON",
    help="Print the JSON record as the last line of stdout [env: SLUICE_BENCH_JSON].",
)
@click.option(
    "--profile",
    is_flag=True,
    envvar="SLUICE_BENCH_PROFILE",
    help="Load pg_stat_statements and keep the costliest statements in the record "
    "(adds a little overhead) [env: SLUICE_BENCH_PROFILE].",
)
@click.option(
    "--reset",
    is_flag=True,
    envvar="SLUICE_BENCH_RESET",
    help="Allow emptying the Sluice tables of a SLUICE_DATABASE_URL that holds jobs "
    "[env: SLUICE_BENCH_RESET].",
)
@click.pass_context
def main(ctx: click.Context, **common: Any) -> None:
    """Sluice's load-test harness: run a scenario, write its record under bench/results/.

    Scenarios: limit, enqueue, drain, wal, latency, dag, backlog, bloat, soak; `all`
    runs them in one go and adds a combined table (see bench/README.md).
    """
    ctx.obj = common


def _execute(
    ctx: click.Context,
    plan: list[tuple[str, dict[str, Any]]],
    combined: bool,
    server_settings: str | None = None,
) -> None:
    common = ctx.obj
    if server_settings is not None:
        common = {**common, "server_settings": server_settings}
    try:
        documents = asyncio.run(
            run_scenarios(
                plan,
                url=common["database_url"],
                data_dir=common["data_dir"],
                out=common["out"],
                profile=common["profile"],
                reset=common["reset"],
                combined=combined,
                server_settings=common["server_settings"],
            )
        )
    except BenchDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    last = documents[-1]
    click.echo(f"written: {last['files']['json']}", err=True)
    if common["as_json"]:
        click.echo(json.dumps(last, default=str))


def scenario_command(name: str, help: str, *options: Any) -> click.Command:
    """A subcommand running scenario `name` with `options` (None: the preset)."""

    def command(server_settings: str | None, **given: Any) -> None:
        ctx = click.get_current_context()
        plan = [(name, options_for(name, ctx.obj["quick"], given))]
        _execute(ctx, plan, combined=False, server_settings=server_settings)

    command.__doc__ = help + " See bench/README.md."
    for option in reversed((*options, SERVER_SETTINGS_OPTION)):
        command = option(command)
    return main.command(name)(command)


def _int(flag: str, env: str, text: str) -> Any:
    return click.option(flag, type=click.IntRange(min=1), envvar=env, help=f"{text} [env: {env}].")


WORKERS = _int("--workers", "SLUICE_BENCH_WORKERS", "Worker processes")
CONCURRENCY = _int("--concurrency", "SLUICE_BENCH_CONCURRENCY", "Concurrency of each worker")


scenario_command(
    "limit",
    "The database's own ceiling (pgbench): insert, claim + complete, 1 and 100 jobs "
    "per transaction.",
    _int("--single-jobs", "SLUICE_BENCH_SINGLE_JOBS", "Jobs at 1 per transaction"),
    _int("--batched-jobs", "SLUICE_BENCH_BATCHED_JOBS", "Jobs at 100 per transaction"),
    _int("--clients", "SLUICE_BENCH_CLIENTS", "pgbench clients"),
)
scenario_command(
    "enqueue",
    "Jobs/s inserted: (a) plain SQL, one per transaction, (b) the batch path (COPY, and "
    "the API's SQL), (c) REST single submissions, (d) REST batches.",
    _int("--single-jobs", "SLUICE_BENCH_SINGLE_JOBS", "Jobs inserted one per transaction (a)"),
    _int("--batched-jobs", "SLUICE_BENCH_BATCHED_JOBS", "Jobs inserted by the batch paths (b)"),
    _int("--rest-jobs", "SLUICE_BENCH_REST_JOBS", "Jobs submitted one per request (c)"),
    _int("--rest-batched-jobs", "SLUICE_BENCH_REST_BATCHED_JOBS", "Jobs in batch requests (d)"),
    _int("--clients", "SLUICE_BENCH_CLIENTS", "Concurrent clients for (a) and (c)"),
    _int(
        "--rounds",
        "SLUICE_BENCH_ROUNDS",
        "Rounds of (a), (e), (b), (f), alternating SQL and Python; rates are medians",
    ),
)
scenario_command(
    "drain",
    "N no-op jobs queued, then W worker processes x C concurrency: jobs/s to the last "
    "completion, with WAL, buffers and CPU per job; once per queue size given; and the "
    "worker's start-up to its first claim.",
    click.option(
        "--jobs",
        envvar="SLUICE_BENCH_JOBS",
        help="Jobs queued before the workers start; several sizes comma separated, each "
        "drained in turn [env: SLUICE_BENCH_JOBS].",
    ),
    WORKERS,
    CONCURRENCY,
)
scenario_command(
    "wal",
    "Where a job's WAL goes: pg_walinspect over an enqueue and a drain, per relation and "
    "record type.",
    _int("--jobs", "SLUICE_BENCH_JOBS", "Jobs enqueued, then drained"),
    WORKERS,
    CONCURRENCY,
    click.option(
        "--checkpoint-between/--no-checkpoint-between",
        default=None,
        help="CHECKPOINT between the enqueue and the drain (default: yes, as issue 15 measured).",
    ),
)
scenario_command(
    "latency",
    "An idle worker; jobs enqueued one at a time: commit-to-handler-start p50/p95/p99.",
    _int("--samples", "SLUICE_BENCH_SAMPLES", "Jobs enqueued one at a time"),
)
scenario_command(
    "dag",
    "A chain (per-edge release latency) and a fan-out/fan-in DAG (submission and run time).",
    _int("--chain", "SLUICE_BENCH_CHAIN", "Nodes of the chain"),
    _int("--fan", "SLUICE_BENCH_FAN", "Nodes of the fan-out/fan-in DAG"),
    WORKERS,
    CONCURRENCY,
)
scenario_command(
    "backlog",
    "Claim throughput with 10k, 100k and 1M jobs waiting (and 1M scheduled); admin views timed.",
    click.option(
        "--levels",
        envvar="SLUICE_BENCH_LEVELS",
        help="Ready jobs waiting at each level, comma separated [env: SLUICE_BENCH_LEVELS].",
    ),
    _int("--scheduled", "SLUICE_BENCH_SCHEDULED", "Jobs scheduled in the future"),
    _int("--sample", "SLUICE_BENCH_SAMPLE", "Jobs claimed and completed at each level"),
    _int("--kept", "SLUICE_BENCH_KEPT", "Finished jobs kept, then the smallest level again"),
)
scenario_command(
    "bloat",
    "Jobs processed while another session holds a transaction open; sizes and recovery.",
    _int("--jobs", "SLUICE_BENCH_JOBS", "Jobs processed while the transaction is open"),
    _int("--normal-jobs", "SLUICE_BENCH_NORMAL_JOBS", "Jobs of the baseline phase"),
    _int("--recovery-jobs", "SLUICE_BENCH_RECOVERY_JOBS", "Jobs left for after it ends"),
    WORKERS,
    CONCURRENCY,
)
scenario_command(
    "soak",
    "Mixed load under SIGKILL chaos; every job terminal, every count adds up.",
    click.option(
        "--duration",
        type=click.FloatRange(min=1),
        envvar="SLUICE_BENCH_DURATION",
        help="Seconds of mixed load under chaos [env: SLUICE_BENCH_DURATION].",
    ),
    WORKERS,
)


@main.command("all")
@SERVER_SETTINGS_OPTION
@click.pass_context
def run_all(ctx: click.Context, server_settings: str | None) -> None:
    """Every scenario in one run (limit first), then one combined table with each
    throughput as a fraction of `limit` and every target met or missed."""
    plan = [(name, options_for(name, ctx.obj["quick"], {})) for name in SCENARIOS]
    _execute(ctx, plan, combined=True, server_settings=server_settings)
