"""`dag`: how fast dependencies release their children.

(a) A chain of N nodes run by one idle worker process. Each node's handler
    answers when it started and ended; each parent's completion commit time is
    read back with pg_xact_commit_timestamp (the server stamps it with the same
    wall clock). Per edge: parent commit to child start (the release: the
    trigger made the child ready in the parent's transaction, then NOTIFY,
    claim, start), and parent handler end to child start (adds the completer's
    buffering and the commit itself).
(b) A fan-out/fan-in DAG: one root, N-2 parallel nodes, one sink waiting for
    all of them. Submission time (sluice.dag_run_create: the run, N jobs, 2(N-2)
    edges in one transaction) and total run time (the run's creation to its
    end, both stamped by the server).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from bench import report
from bench.database import scalar
from bench.harness import Bench, Record
from bench.workers import WorkerGroup

FULL = {"chain": 1000, "fan": 10_000, "workers": 2, "concurrency": 256}
QUICK = {"chain": 300, "fan": 10_000, "workers": 2, "concurrency": 256}


# Each chain node: handler start, handler end, and when its completion committed.
CHAIN_NODES = """
SELECT (result->>0)::float8, (result->>1)::float8,
       extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8
  FROM sluice.jobs WHERE run_id = %s ORDER BY id
"""
CHAIN_NODES_NO_COMMIT_TS = """
SELECT (result->>0)::float8, (result->>1)::float8, NULL
  FROM sluice.jobs WHERE run_id = %s ORDER BY id
"""


def chain_definition(n: int) -> dict:
    nodes = [{"id": "n0", "task": "bench.span"}]
    nodes += [
        {"id": f"n{i}", "task": "bench.span", "depends_on": [f"n{i - 1}"]} for i in range(1, n)
    ]
    return {"nodes": nodes}


def fan_definition(n: int) -> dict:
    middle = [f"m{i}" for i in range(n - 2)]
    return {
        "nodes": [
            {"id": "root", "task": "noop"},
            *({"id": m, "task": "noop", "depends_on": ["root"]} for m in middle),
            {"id": "sink", "task": "noop", "depends_on": middle},
        ]
    }


async def wait_run(conn, run_id: int, step=None, total: int = 0, within: float = 600.0) -> str:
    """Wait until the run ends; answers its state."""
    deadline = time.monotonic() + within
    while True:
        state = await scalar(
            conn, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", (run_id,)
        )
        if state != "running":
            return state
        if step is not None:
            done = await scalar(
                conn,
                "SELECT count(*) FROM sluice.jobs WHERE run_id = %s AND state = 'succeeded'",
                (run_id,),
            )
            step.update(done, total)
        if time.monotonic() > deadline:
            raise TimeoutError(f"DAG run {run_id} did not finish")
        await asyncio.sleep(0.2)


async def run(bench: Bench, *, chain: int, fan: int, workers: int, concurrency: int) -> Record:
    record = Record("dag")
    record.options = {"chain": chain, "fan": fan, "workers": workers, "concurrency": concurrency}
    async with bench.connection() as conn:
        commit_ts = await scalar(conn, "SHOW track_commit_timestamp") == "on"
        # (a) the chain, on one idle worker.
        async with WorkerGroup(bench.url, count=1, concurrency=10) as group:
            await group.start()
            await asyncio.sleep(0.5)
            with bench.progress(f"chain of {chain}", chain) as step:
                run_id = await scalar(
                    conn,
                    "SELECT sluice.dag_run_create('default', %s::jsonb)",
                    (json.dumps(chain_definition(chain)),),
                )
                state = await wait_run(conn, run_id, step, chain)
        if state != "succeeded":
            raise RuntimeError(f"the chain ended {state}")
        cur = await conn.execute(CHAIN_NODES if commit_ts else CHAIN_NODES_NO_COMMIT_TS, (run_id,))
        nodes = await cur.fetchall()
        from_end = [(c[0] - p[1]) * 1000 for p, c in itertools.pairwise(nodes)]
        record.figure("chain_edge_p50_ms", report.percentile(from_end, 50),
                      "chain: parent handler end to child start p50 (ms)")  # fmt: skip
        record.figure("chain_edge_p99_ms", report.percentile(from_end, 99),
                      "chain: parent handler end to child start p99 (ms)")  # fmt: skip
        series = {"parent handler end to child start": from_end}
        if commit_ts:
            release = [(c[0] - p[2]) * 1000 for p, c in itertools.pairwise(nodes)]
            record.figure("chain_release_p50_ms", report.percentile(release, 50),
                          "chain: parent commit to child start p50 (ms)")  # fmt: skip
            record.figure("chain_release_p99_ms", report.percentile(release, 99),
                          "chain: parent commit to child start p99 (ms)")  # fmt: skip
            series["parent commit to child start"] = release
            record.details["release_ms"] = [round(x, 3) for x in release]
        else:
            record.notes.append("track_commit_timestamp is off: no parent-commit figures")
        record.figure(
            "chain_seconds", nodes[-1][1] - nodes[0][0], f"chain of {chain}: run time (s)"
        )
        record.charts["chain"] = report.histogram(
            f"DAG chain of {chain}: per-edge release latency", series, "milliseconds"
        )

        # (b) fan-out/fan-in, on W workers.
        await conn.execute("VACUUM ANALYZE sluice.jobs")
        definition = json.dumps(fan_definition(fan))
        async with WorkerGroup(bench.url, count=workers, concurrency=concurrency) as group:
            await group.start()
            with bench.progress(f"fan-out/fan-in of {fan:,}", fan) as step:
                began = time.perf_counter()
                run_id = await scalar(
                    conn, "SELECT sluice.dag_run_create('default', %s::jsonb)", (definition,)
                )
                submit_s = time.perf_counter() - began
                state = await wait_run(conn, run_id, step, fan)
        if state != "succeeded":
            raise RuntimeError(f"the fan-out/fan-in run ended {state}")
        total = await scalar(
            conn,
            "SELECT extract(epoch FROM finished_at - created_at)::float8"
            " FROM sluice.dag_runs WHERE id = %s",
            (run_id,),
        )
        record.figure("fan_submit_s", submit_s, f"fan-out/fan-in of {fan:,}: submission (s)")
        record.figure("fan_run_s", total, f"fan-out/fan-in of {fan:,}: submission to end (s)")
        record.figure("fan_jobs_per_s", fan / total, f"fan-out/fan-in of {fan:,}: nodes/s")
    return record
