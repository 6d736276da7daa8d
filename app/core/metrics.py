"""Prometheus metrics, defined once for every Sluice process (names start `sluice_`).

Workers update the job counters and histograms as they run jobs; the API
updates request latency and, at each scrape, refreshes the gauges read from the
database (queue depth per state, dead letters, live workers), so that any
number of processes report one consistent view of the queues.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

JOBS_ENQUEUED = Counter(
    "sluice_jobs_enqueued_total",
    "Jobs enqueued through this process (API or CLI), by queue and task.",
    ["queue", "task"],
)
JOBS_COMPLETED = Counter(
    "sluice_jobs_completed_total",
    "Attempts finished by workers, by queue, task and outcome "
    "(succeeded, failed, timeout, cancelled, released).",
    ["queue", "task", "outcome"],
)
JOB_RETRIES = Counter(
    "sluice_job_retries_total",
    "Failed attempts that were scheduled to run again, by queue and task.",
    ["queue", "task"],
)
JOBS_DEAD_LETTERED = Counter(
    "sluice_jobs_dead_lettered_total",
    "Jobs that ended failed and entered the dead-letter queue, by queue and task.",
    ["queue", "task"],
)
JOB_RUN_SECONDS = Histogram(
    "sluice_job_run_seconds",
    "Time a handler ran, by queue and task.",
    ["queue", "task"],
    buckets=DURATION_BUCKETS,
)
JOB_WAIT_SECONDS = Histogram(
    "sluice_job_wait_seconds",
    "Time from a job being due (run_at) to a worker starting it, by queue.",
    ["queue"],
    buckets=DURATION_BUCKETS,
)
JOBS_RUNNING = Gauge(
    "sluice_worker_jobs_running",
    "Jobs this worker process is running now.",
)

EVENT_LOOP_STALLS = Counter(
    "sluice_worker_event_loop_stalls_total",
    "Times this worker's event loop was blocked for a second or more (an async "
    "handler running blocking code).",
)
MAINTENANCE_ERRORS = Counter(
    "sluice_maintenance_errors_total",
    "Maintenance passes that failed, and rows they had to set aside, by service "
    "(promoter, rescuer, pruner, cron).",
    ["service"],
)

QUEUE_DEPTH = Gauge(
    "sluice_queue_depth",
    "Jobs per queue and state, read from the database at scrape time.",
    ["queue", "state"],
)
DEAD_LETTERS = Gauge(
    "sluice_dead_letters",
    "Unresolved dead-letter entries, read from the database at scrape time.",
)
WORKERS_ALIVE = Gauge(
    "sluice_workers_alive",
    "Workers heartbeating on time, read from the database at scrape time.",
)
API_REQUEST_SECONDS = Histogram(
    "sluice_api_request_seconds",
    "API request latency, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=DURATION_BUCKETS,
)
