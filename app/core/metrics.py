"""Prometheus metrics (names start `sluice_`), each exported by the process that owns it.

Two registries, so no process reports a number it does not know (a placeholder
zero is worse than no series: it looks like a fact):

- `WORKER_REGISTRY`, served by each worker on `SLUICE_METRICS_PORT`: what that
  worker did (attempts by outcome, run and wait times, retries, dead letters it
  wrote, lease rescues as maintenance leader) and the jobs it runs now.
- `API_REGISTRY`, served by the API at `/metrics`: request latency, jobs
  enqueued through it, and the database-wide gauges (queue depth per state,
  oldest ready job, consumers per queue, dead letters, live workers), read from
  PostgreSQL at each scrape, so every API replica reports the same numbers.

Both carry the standard process and Python collectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from sluice.core.jobs import WAIT_KINDS

# No `_created` series beside every counter: nothing here reads them, and they
# double what a scrape carries.
disable_created_metrics()

WORKER_REGISTRY = CollectorRegistry(auto_describe=True)
API_REGISTRY = CollectorRegistry(auto_describe=True)
for _registry in (WORKER_REGISTRY, API_REGISTRY):
    ProcessCollector(registry=_registry)
    PlatformCollector(registry=_registry)
    GCCollector(registry=_registry)

# Job durations span milliseconds (no-op) to hours (reports): log-spaced buckets.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
)

# -- worker ----------------------------------------------------------------------

JOBS_COMPLETED = Counter(
    "sluice_jobs_completed_total",
    "Attempts this worker finished, by queue, task and outcome "
    "(succeeded, failed, timeout, cancelled, released).",
    ["queue", "task", "outcome"],
    registry=WORKER_REGISTRY,
)
JOB_RETRIES = Counter(
    "sluice_job_retries_total",
    "Failed attempts of this worker that were scheduled to run again, by queue and task.",
    ["queue", "task"],
    registry=WORKER_REGISTRY,
)
JOBS_DEAD_LETTERED = Counter(
    "sluice_jobs_dead_lettered_total",
    "Jobs this worker's failures moved to the dead-letter queue, by queue and task.",
    ["queue", "task"],
    registry=WORKER_REGISTRY,
)
JOBS_RESCUED = Counter(
    "sluice_jobs_rescued_total",
    "Running jobs whose lease expired (their worker died or hung) and that this worker "
    "rescued as maintenance leader; by what became of them (retried, dead_lettered).",
    ["result"],
    registry=WORKER_REGISTRY,
)
JOB_RUN_SECONDS = Histogram(
    "sluice_job_run_seconds",
    "Time a handler ran on this worker, by queue and task.",
    ["queue", "task"],
    buckets=DURATION_BUCKETS,
    registry=WORKER_REGISTRY,
)
JOB_WAIT_SECONDS = Histogram(
    "sluice_job_wait_seconds",
    "Time a job waited before this worker started it: from its enqueue (or, when it "
    "was delayed or is a retry, from the time it was due) to the start, by queue.",
    ["queue"],
    buckets=DURATION_BUCKETS,
    registry=WORKER_REGISTRY,
)
JOBS_RUNNING = Gauge(
    "sluice_worker_jobs_running",
    "Jobs this worker process is running now.",
    registry=WORKER_REGISTRY,
)

EVENT_LOOP_STALLS = Counter(
    "sluice_worker_event_loop_stalls_total",
    "Times this worker's event loop was blocked for a second or more (an async "
    "handler running blocking code).",
    registry=WORKER_REGISTRY,
)
MAINTENANCE_ERRORS = Counter(
    "sluice_maintenance_errors_total",
    "Maintenance passes of this worker that failed, and rows they had to set aside, "
    "by service (promoter, rescuer, pruner, cron).",
    ["service"],
    registry=WORKER_REGISTRY,
)

# -- API -------------------------------------------------------------------------

JOBS_ENQUEUED = Counter(
    "sluice_jobs_enqueued_total",
    "Jobs enqueued through this API process, by queue and task (SQL enqueues are "
    "counted by sluice_queue_depth, not here).",
    ["queue", "task"],
    registry=API_REGISTRY,
)
API_REQUEST_SECONDS = Histogram(
    "sluice_api_request_seconds",
    "API request latency, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=DURATION_BUCKETS,
    registry=API_REGISTRY,
)

# The database-wide gauges: built at each scrape from rows the caller read.
QUEUE_GAUGES = {
    # field of a queue row (sluice.core.engine.QueueDepth) -> (metric, help)
    "oldest_ready_seconds": (
        "sluice_queue_oldest_ready_seconds",
        "How long the oldest ready job of the queue has waited (0: none ready).",
    ),
    "consumers": (
        "sluice_queue_consumers",
        "Live, unpaused workers that take jobs from the queue.",
    ),
    "paused": ("sluice_queue_paused", "1 when the queue is paused."),
}


class DatabaseSnapshot:
    """A collector over rows read from the database for one scrape.

    `queues` are rows with a queue's name, its count per state, and the fields of
    QUEUE_GAUGES (sluice.core.engine.QueueDepth); `states` the job states to
    report as `sluice_queue_depth{state}`.
    """

    def __init__(
        self,
        queues: Iterable[Any],
        states: Iterable[str],
        *,
        dead_letters: int,
        workers_alive: int,
        nodes_waiting: dict[str, int] | None = None,
        runs_queued: int = 0,
    ) -> None:
        self._queues = list(queues)
        self._states = tuple(states)
        self._dead_letters = dead_letters
        self._workers_alive = workers_alive
        self._nodes_waiting = nodes_waiting or {}
        self._runs_queued = runs_queued

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "sluice_queue_depth",
            "Jobs per queue and state, read from the database at scrape time.",
            labels=["queue", "state"],
        )
        for row in self._queues:
            for state in self._states:
                depth.add_metric([row.queue, state], getattr(row, state))
        yield depth
        for field, (name, doc) in QUEUE_GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for row in self._queues:
                family.add_metric([row.queue], float(getattr(row, field)))
            yield family
        yield GaugeMetricFamily(
            "sluice_dead_letters",
            "Unresolved dead-letter entries, read from the database at scrape time.",
            value=self._dead_letters,
        )
        yield GaugeMetricFamily(
            "sluice_workers_alive",
            "Workers heartbeating on time, read from the database at scrape time.",
            value=self._workers_alive,
        )
        waiting = GaugeMetricFamily(
            "sluice_dag_nodes_waiting",
            "DAG nodes waiting for a signal, a duration or their map's elements, "
            "read from the database at scrape time.",
            labels=["kind"],
        )
        # Every kind, 0 included, so an alert can compare it with nothing.
        for kind in WAIT_KINDS:
            waiting.add_metric([kind], self._nodes_waiting.get(kind, 0))
        yield waiting
        yield GaugeMetricFamily(
            "sluice_dag_runs_queued",
            "DAG runs waiting for a concurrency slot, read from the database at scrape time.",
            value=self._runs_queued,
        )

    def exposition(self) -> bytes:
        """The API's /metrics body: its own metrics, then this snapshot."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(API_REGISTRY) + generate_latest(registry)
