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
(c) A map (docs/dags.md): a parent returns a list of M numbers, its child maps
    over it (`map: "{{ nodes.split.result.items }}"`, one element job each,
    created and rendered in the parent's completion transaction), and a join
    waits for all of them and receives their results in element order. From
    the parent's commit: the length of that completion transaction (the
    elements' created_at is its start: every element is ready at its commit),
    the first and the last element starting; and from the last element's commit
    (the one that aggregated the results and released the join) to the join
    starting.
(d) A relay: a chain of K nodes each handing on a result of S bytes to the
    next through a template (`data: "{{ nodes.prev.result.data }}"`, rendered
    by the database when the child becomes ready; the claim also brings the
    parents' results). Parent commit to child start per edge, to set against
    the plain chain of (a).
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

FULL = {"chain": 1000, "fan": 10_000, "workers": 2, "concurrency": 256, "map_size": 10_000,
        "relay": 100, "relay_bytes": 10_240}  # fmt: skip
QUICK = {"chain": 300, "fan": 10_000, "workers": 2, "concurrency": 256, "map_size": 10_000,
         "relay": 50, "relay_bytes": 10_240}  # fmt: skip


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


def map_definition(n: int) -> dict:
    return {
        "nodes": [
            {"id": "split", "task": "bench.items", "payload": {"n": n}},
            {
                "id": "work",
                "task": "bench.span",
                "depends_on": ["split"],
                "map": "{{ nodes.split.result.items }}",
                "payload": {"item": "{{ item }}"},
            },
            {"id": "join", "task": "bench.span", "depends_on": ["work"]},
        ]
    }


def relay_definition(n: int, size: int) -> dict:
    nodes = [{"id": "r0", "task": "bench.relay", "payload": {"size": size}}]
    nodes += [
        {
            "id": f"r{i}",
            "task": "bench.relay",
            "depends_on": [f"r{i - 1}"],
            "payload": {"data": f"{{{{ nodes.r{i - 1}.result.data }}}}"},
        }
        for i in range(1, n)
    ]
    return {"nodes": nodes}


# The map run, all from the server's clock but the handlers' [start, end] (the
# wall clock the machine shares): the parent's commit, its completion
# transaction's start (the elements' created_at), the elements' first and last
# handler start, the last element's commit and handler end, the join's start.
MAP_TIMES = """
WITH split AS (
    SELECT extract(epoch FROM pg_xact_commit_timestamp(j.xmin))::float8 AS committed
      FROM sluice.jobs j WHERE j.run_id = %(run)s AND j.node = 'split'
), elements AS (
    SELECT extract(epoch FROM min(e.created_at))::float8 AS created,
           min((e.result->>0)::float8) AS first_start, max((e.result->>0)::float8) AS last_start,
           max((e.result->>1)::float8) AS last_end,
           max(extract(epoch FROM pg_xact_commit_timestamp(e.xmin)))::float8 AS last_commit,
           count(*) AS n
      FROM sluice.jobs e WHERE e.run_id = %(run)s AND e.map_index IS NOT NULL
)
SELECT s.committed, e.created, e.first_start, e.last_start, e.last_end, e.last_commit, e.n,
       (SELECT (j.result->>0)::float8 FROM sluice.jobs j
         WHERE j.run_id = %(run)s AND j.node = 'join') AS join_start,
       (SELECT jsonb_array_length(g.result) FROM sluice.jobs g
         WHERE g.run_id = %(run)s AND g.node = 'work' AND g.map_index IS NULL) AS gathered
  FROM split s, elements e
"""
RELAY_NODES = """
SELECT (result #>> '{span,0}')::float8, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8,
       octet_length(result ->> 'data')
  FROM sluice.jobs WHERE run_id = %s ORDER BY id
"""


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


async def run_dag(
    bench: Bench,
    conn,
    definition: dict,
    what: str,
    total: int,
    *,
    workers: int = 1,
    concurrency: int = 10,
) -> int:
    """Start a run of `definition` on fresh workers (one idle worker unless said) and
    wait for it to succeed; answers its id. `total` jobs make the progress bar."""
    async with WorkerGroup(bench.url, count=workers, concurrency=concurrency) as group:
        await group.start()
        await asyncio.sleep(0.5)
        with bench.progress(what, total) as step:
            run_id = await scalar(
                conn,
                "SELECT sluice.dag_run_create('default', %s::jsonb)",
                (json.dumps(definition),),
            )
            state = await wait_run(conn, run_id, step, total)
    if state != "succeeded":
        raise RuntimeError(f"{what} ended {state}")
    return run_id


async def run(
    bench: Bench,
    *,
    chain: int,
    fan: int,
    workers: int,
    concurrency: int,
    map_size: int = 200,
    relay: int = 10,
    relay_bytes: int = 10_240,
) -> Record:
    record = Record("dag")
    record.options = {"chain": chain, "fan": fan, "workers": workers, "concurrency": concurrency,
                      "map_size": map_size, "relay": relay, "relay_bytes": relay_bytes}  # fmt: skip
    async with bench.connection() as conn:
        commit_ts = await scalar(conn, "SHOW track_commit_timestamp") == "on"
        # (a) the chain, on one idle worker.
        run_id = await run_dag(bench, conn, chain_definition(chain), f"chain of {chain}", chain)
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

        if not commit_ts:
            record.notes.append("track_commit_timestamp is off: no map or relay figures")
            return record
        await conn.execute("VACUUM ANALYZE sluice.jobs")
        await map_and_join(bench, conn, record, map_size, workers, concurrency)
        await relay_chain(bench, conn, record, relay, relay_bytes)
    return record


async def map_and_join(bench: Bench, conn, record: Record, n: int, workers: int,
                       concurrency: int) -> None:  # fmt: skip
    """(c): a map of `n` elements and its join, on W workers."""
    run_id = await run_dag(bench, conn, map_definition(n), f"map of {n:,} and its join", n + 2,
                           workers=workers, concurrency=concurrency)  # fmt: skip
    cur = await conn.execute(MAP_TIMES, {"run": run_id})
    (
        committed,
        created,
        first,
        last,
        last_end,
        last_commit,
        count,
        join,
        gathered,
    ) = await cur.fetchone()
    if count != n or gathered != n:
        raise RuntimeError(f"the map made {count} elements and gathered {gathered}, not {n}")
    label = f"map of {n:,}"
    record.figure(
        "map_expand_ms",
        (committed - created) * 1000,
        f"{label}: the parent's completion transaction, expansion included (ms)",
    )
    record.figure(
        "map_first_start_ms",
        (first - committed) * 1000,
        f"{label}: parent commit to the first element starting (ms)",
    )
    record.figure(
        "map_last_start_s",
        last - committed,
        f"{label}: parent commit to the last element starting (s)",
    )
    record.figure(
        "map_join_ms",
        (join - last_commit) * 1000,
        f"{label}: last element's commit to the join starting (ms)",
    )
    record.figure("map_join_from_end_ms", (join - last_end) * 1000,
                  f"{label}: last element's handler end to the join starting (ms)")  # fmt: skip


async def relay_chain(bench: Bench, conn, record: Record, n: int, size: int) -> None:
    """(d): a chain of `n` nodes handing on `size` bytes each, on one idle worker."""
    run_id = await run_dag(bench, conn, relay_definition(n, size), f"relay of {n} x {size:,} B", n)
    cur = await conn.execute(RELAY_NODES, (run_id,))
    nodes = await cur.fetchall()
    if any(length != size for _, _, length in nodes):
        raise RuntimeError("a relay node did not hand on the whole result")
    release = [(c[0] - p[1]) * 1000 for p, c in itertools.pairwise(nodes)]
    label = f"relay of {n} x {size // 1024} KB"
    record.figure(
        "relay_release_p50_ms",
        report.percentile(release, 50),
        f"{label}: parent commit to child start p50 (ms)",
    )
    record.figure("relay_release_p99_ms", report.percentile(release, 99),
                  f"{label}: parent commit to child start p99 (ms)")  # fmt: skip
    record.details["relay_release_ms"] = [round(x, 3) for x in release]
