"""`soak`: a long mixed run under chaos; at the end every count must add up.

For `duration` seconds a producer submits a mix: single `bench.chaos` jobs
(random sleeps, some failing and retried, a few failing for good), small DAG
runs with failing nodes (their descendants get cancelled), jobs cancelled by
the client while pending or running, and a cron schedule firing every two
seconds. Meanwhile worker processes (each a maintenance candidate: promote,
rescue, cron) are killed with SIGKILL at random and replaced. Leases are
short, so the jobs of a killed worker are rescued within seconds.

Then production stops, the workers run until every job is terminal, and:
- every job the producer submitted exists (none lost) and is terminal;
- submitted (producer's jobs + DAG nodes + cron occurrences + notifications)
  = succeeded + failed + cancelled;
- every failed job has an open dead-letter entry; every run has ended;
- each cron occurrence started exactly one job;
- duplicate executions (a handler that ran to completion more than once for
  the same job, which at-least-once delivery allows after a kill) are counted
  from the handlers' own append-only logs.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from bench.database import scalar
from bench.harness import Bench, Record
from bench.tasks import LOG_DIR_ENV
from bench.workers import WorkerGroup
from sluice.core.jobs import TERMINAL_STATES as TERMINAL

FULL = {"duration": 300.0, "workers": 3}
QUICK = {"duration": 45.0, "workers": 3}

WORKER_ENV = {
    "SLUICE_MAINTENANCE": "1",
    "SLUICE_LEASE_TTL": "2",
    "SLUICE_HEARTBEAT_INTERVAL": "0.5",
    "SLUICE_RESCUE_INTERVAL": "0.5",
    "SLUICE_LEADER_TTL": "2",
    "SLUICE_PROMOTE_INTERVAL": "0.2",
    "SLUICE_CRON_INTERVAL": "0.5",
    "SLUICE_SHUTDOWN_GRACE": "2",
}
# Checks that must come out zero for the soak to pass.
MUST_BE_ZERO = (
    "lost",
    "not_terminal",
    "count_mismatch",
    "unexpected_jobs",
    "failed_without_dead_letter",
    "runs_not_ended",
    "cron_duplicates",
    "succeeded_never_ran",
)


def chaos_payload(rng: random.Random) -> dict:
    return {
        "sleep": round(rng.choice([0, 0, 0.001, 0.01, 0.05, 0.2]), 3),
        "fail": rng.choice([0, 0, 0, 0.3]),
        "fatal": rng.random() < 0.02,
    }


def dag_definition(rng: random.Random) -> dict:
    """A small diamond-ish DAG: a -> (b1..bk) -> c -> d, some nodes failing."""
    k = rng.randint(2, 5)
    node = {"task": "bench.chaos", "max_attempts": 2, "backoff_base": 0.05, "backoff_max": 0.2}
    mids = [f"b{i}" for i in range(k)]
    nodes = [{"id": "a", **node, "payload": chaos_payload(rng)}]
    nodes += [{"id": m, **node, "payload": chaos_payload(rng), "depends_on": ["a"]} for m in mids]
    nodes += [{"id": "c", **node, "payload": chaos_payload(rng), "depends_on": mids}]
    nodes += [{"id": "d", **node, "payload": {"sleep": 0}, "depends_on": ["c"]}]
    return {"nodes": nodes}


class Producer:
    """Submits the mix and remembers every job id it created."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.job_ids: list[int] = []
        self.run_ids: list[int] = []
        self.dag_nodes = 0
        self.cancel_requests = 0

    async def step(self, conn) -> None:
        rng = self.rng
        n = rng.randint(1, 20)
        cur = await conn.execute(
            "INSERT INTO sluice.jobs (task, payload, max_attempts, backoff_base, backoff_max)"
            " SELECT 'bench.chaos', p, 3, '50 milliseconds', '500 milliseconds'"
            " FROM jsonb_array_elements(%s::jsonb) p RETURNING id",
            (json.dumps([chaos_payload(rng) for _ in range(n)]),),
        )
        self.job_ids += [r[0] for r in await cur.fetchall()]
        if rng.random() < 0.2:
            definition = dag_definition(rng)
            run_id = await scalar(
                conn,
                "SELECT sluice.dag_run_create('default', %s::jsonb)",
                (json.dumps(definition),),
            )
            self.run_ids.append(run_id)
            self.dag_nodes += len(definition["nodes"])
        if rng.random() < 0.2 and self.job_ids:
            victims = rng.sample(self.job_ids[-200:], k=min(3, len(self.job_ids)))
            await conn.execute("SELECT sluice.job_cancel(%s, 'bench')", (victims,))
            self.cancel_requests += len(victims)


async def chaos(
    group: WorkerGroup, rng: random.Random, stop: asyncio.Event, duration: float
) -> None:
    """Kill a random worker every 1-5 s (sooner in a short run), and start a replacement."""
    longest = max(0.5, min(5.0, duration / 4))
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(longest / 5, longest))
        except TimeoutError:
            alive = group.alive()
            if alive:
                group.kill(rng.choice(alive))
            await asyncio.sleep(rng.uniform(0, 0.5))
            group.spawn()


async def run(bench: Bench, *, duration: float, workers: int) -> Record:
    record = Record("soak")
    record.options = {"duration": duration, "workers": workers, "worker_env": WORKER_ENV}
    rng = random.Random(66)  # noqa: S311 - load shape, not secrets
    log_dir = Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    producer = Producer(rng)
    try:
        async with bench.connection() as conn:
            await conn.execute(
                "INSERT INTO sluice.schedules (name, cron, job)"
                " VALUES ('bench-soak', '* * * * * */2', %s::jsonb)",
                (json.dumps({"task": "bench.chaos", "payload": {"sleep": 0.01}}),),
            )
            env = {**WORKER_ENV, LOG_DIR_ENV: str(log_dir)}
            async with WorkerGroup(bench.url, count=workers, concurrency=32, env=env) as group:
                await group.start()
                stop = asyncio.Event()
                killer = asyncio.create_task(chaos(group, rng, stop, duration))
                began = time.monotonic()
                with bench.progress(f"soak ({duration:g} s under chaos)", duration) as step:
                    while (elapsed := time.monotonic() - began) < duration:
                        await producer.step(conn)
                        step.update(min(elapsed, duration))
                        await asyncio.sleep(rng.uniform(0.01, 0.1))
                stop.set()
                await killer
                await conn.execute("UPDATE sluice.schedules SET enabled = false")
                settle_began = time.monotonic()
                with bench.progress("soak: waiting for every job to end", None):
                    await wait_terminal(conn, group)
                settle_s = time.monotonic() - settle_began
            record.checks.update(await audit(conn, producer, log_dir))
        record.checks["workers_killed"] = group.killed
        record.figure("duration_s", duration, "time under chaos (s)")
        record.figure(
            "settle_s", max(settle_s, 0.001), "time for the last jobs to end after it (s)"
        )
        total = record.checks["jobs_total"]
        record.figure(
            "jobs_per_s", total / (duration + settle_s), "jobs finished per second, overall"
        )
        ok = all(record.checks[k] == 0 for k in MUST_BE_ZERO)
        record.checks["all_counts_add_up"] = int(ok)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    return record


async def wait_terminal(conn, group: WorkerGroup, within: float = 300.0) -> None:
    deadline = time.monotonic() + within
    while await scalar(
        conn, "SELECT EXISTS (SELECT 1 FROM sluice.jobs WHERE NOT sluice.state_is_terminal(state))"
    ):
        if time.monotonic() > deadline:
            return  # the audit reports what is left
        if len(group.alive()) < group.count:
            group.spawn()
        await asyncio.sleep(0.2)


def completed_executions(log_dir: Path) -> collections.Counter[int]:
    """From the handlers' own logs: how many times each job's handler ran to the end."""
    done: collections.Counter[int] = collections.Counter()
    for path in log_dir.glob("executions-*.log"):
        for line in path.read_text().splitlines():
            kind, job_id, _attempt = line.split()
            if kind == "done":
                done[int(job_id)] += 1
    return done


async def audit(conn, producer: Producer, log_dir: Path) -> dict[str, int]:
    """Every count of the soak's final state."""
    cur = await conn.execute("SELECT state::text, count(*) FROM sluice.jobs GROUP BY 1")
    states = collections.Counter(dict(await cur.fetchall()))
    total = sum(states.values())
    present = await scalar(
        conn, "SELECT count(*) FROM sluice.jobs WHERE id = ANY(%s)", (producer.job_ids,)
    )
    nodes = await scalar(
        conn, "SELECT count(*) FROM sluice.jobs WHERE run_id = ANY(%s)", (producer.run_ids,)
    )
    cron = await scalar(
        conn, "SELECT count(*) FROM sluice.jobs WHERE idempotency_key LIKE 'schedule:%%'"
    )
    cron_keys = await scalar(
        conn,
        "SELECT count(DISTINCT idempotency_key) FROM sluice.jobs"
        " WHERE idempotency_key LIKE 'schedule:%%'",
    )
    # Nothing else creates jobs here (no job asks for notifications).
    unexpected = total - present - nodes - cron
    submitted = len(producer.job_ids) + producer.dag_nodes + cron
    failed_without_dlq = await scalar(
        conn,
        "SELECT count(*) FROM sluice.jobs j WHERE j.state = 'failed' AND NOT EXISTS"
        " (SELECT 1 FROM sluice.dead_letters d WHERE d.job_id = j.id AND d.resolved_at IS NULL)",
    )
    runs_open = await scalar(
        conn,
        "SELECT count(*) FROM sluice.dag_runs WHERE id = ANY(%s) AND state = 'running'",
        (producer.run_ids,),
    )
    rescued = await scalar(
        conn, "SELECT count(*) FROM sluice.job_attempts WHERE outcome = 'rescued'"
    )
    done = completed_executions(log_dir)
    cur = await conn.execute(
        "SELECT id FROM sluice.jobs WHERE state = 'succeeded' AND task = 'bench.chaos'"
    )
    succeeded_ids = [r[0] for r in await cur.fetchall()]
    never_ran = sum(1 for i in succeeded_ids if done[i] == 0)
    duplicates = sum(1 for n in done.values() if n > 1)
    return {
        "jobs_total": total,
        "submitted_jobs": len(producer.job_ids),
        "dag_runs": len(producer.run_ids),
        "dag_nodes": producer.dag_nodes,
        "cron_jobs": cron,
        "unexpected_jobs": unexpected,
        "succeeded": states["succeeded"],
        "failed": states["failed"],
        "cancelled": states["cancelled"],
        "lost": len(producer.job_ids) - present + producer.dag_nodes - nodes,
        "not_terminal": total - sum(states[s] for s in TERMINAL),
        "count_mismatch": abs(submitted - sum(states[s] for s in TERMINAL)),
        "failed_without_dead_letter": failed_without_dlq,
        "runs_not_ended": runs_open,
        "cron_duplicates": cron - cron_keys,
        "rescued_attempts": rescued,
        "duplicate_executions": duplicates,
        "succeeded_never_ran": never_ran,
        "cancel_requests": producer.cancel_requests,
    }
