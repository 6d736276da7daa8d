"""Worker settings, from `SLUICE_*` environment variables (flags of `sluice worker` win)."""

from __future__ import annotations

import dataclasses
import os
import socket

from sluice.core.config import SettingsError, parse_bool, parse_list, setting
from sluice.core.durations import duration_setting
from sluice.core.jobs import ANY_QUEUE, DEFAULT_QUEUE, QUEUE_NAME
from sluice.core.outbound import OutboundPolicy


def parse_port(value: str) -> int | None:
    if not value.strip():
        return None
    port = int(value)
    if not 0 < port < 65536:
        raise ValueError(f"expected a TCP port (1-65535), got {value!r}")
    return port


def check_queues(queues: tuple[str, ...]) -> None:
    """Refuse SLUICE_QUEUES that name no queue, or a name no job can be enqueued to
    (its worker would wait forever): each is a queue name, or * for every queue."""
    if not queues:
        raise SettingsError(
            f"SLUICE_QUEUES: name at least one queue, or {ANY_QUEUE} for every queue"
        )
    bad = [q for q in queues if q != ANY_QUEUE and not QUEUE_NAME.match(q)]
    if bad:
        raise SettingsError(
            f"SLUICE_QUEUES: {bad[0]!r} is not a queue name ({QUEUE_NAME.rule}), "
            f"nor {ANY_QUEUE} for every queue"
        )


def default_worker_id() -> str:
    """host-pid-random: unique per process, and readable in `sluice.worker_status`."""
    # os.urandom, as secrets.token_hex does, without importing secrets (hmac, hashlib).
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """How one worker process claims, runs and completes jobs."""

    queues: tuple[str, ...] = setting(
        "SLUICE_QUEUES",
        (DEFAULT_QUEUE,),
        f"Queues to take jobs from, comma separated; {ANY_QUEUE} takes every queue.",
        parse_list,
    )
    concurrency: int = setting("SLUICE_CONCURRENCY", 10, "Jobs this worker runs at once.", int)
    worker_id: str | None = setting(
        "SLUICE_WORKER_ID", None, "This worker's id in sluice.workers (default: host-pid-random)."
    )
    lease_ttl: float = setting(
        "SLUICE_LEASE_TTL",
        30.0,
        "How long a claimed job stays leased without a heartbeat; a job whose worker "
        "died is retried this long after the last heartbeat.",
        duration_setting,
    )
    heartbeat_interval: float = setting(
        "SLUICE_HEARTBEAT_INTERVAL",
        5.0,
        "How often the worker renews its leases and reports itself alive.",
        duration_setting,
    )
    poll_interval: float = setting(
        "SLUICE_POLL_INTERVAL",
        5.0,
        "Fallback poll for ready jobs when no notification came (LISTEN/NOTIFY wakes the "
        "worker at once; this only covers a lost notification).",
        duration_setting,
    )
    shutdown_grace: float = setting(
        "SLUICE_SHUTDOWN_GRACE",
        30.0,
        "On SIGTERM, how long running jobs may take to finish before they are handed back.",
        duration_setting,
    )
    default_timeout: float = setting(
        "SLUICE_DEFAULT_TIMEOUT",
        3600.0,
        "Timeout of a job that sets none (jobs.timeout); past it the attempt fails.",
        duration_setting,
    )
    allow_shell: bool = setting(
        "SLUICE_ALLOW_SHELL",
        False,
        "Allow `shell` tasks (they run any command the submitter names). Off by default.",
        parse_bool,
    )
    outbound_allow: OutboundPolicy = setting(
        "SLUICE_OUTBOUND_ALLOW",
        OutboundPolicy(),
        "What `http` and `webhook` tasks (and ctx.http) may reach besides public addresses, "
        "comma separated: host names (api.internal, *.svc.cluster.local), addresses or "
        "networks (10.1.0.0/16), each optionally with a port (127.0.0.1:8000). Loopback, "
        "private, link-local and other special-purpose addresses are refused otherwise.",
        OutboundPolicy.parse,
    )
    smtp_url: str | None = setting(
        "SLUICE_SMTP_URL",
        None,
        "SMTP server for `email` tasks: smtp://user:pass@host:587?starttls=1 or "
        "smtps://user:pass@host:465. Unset: email tasks fail.",
    )
    smtp_from: str = setting(
        "SLUICE_SMTP_FROM", "sluice@localhost", "Sender address of `email` tasks."
    )
    task_modules: tuple[str, ...] = setting(
        "SLUICE_TASK_MODULES",
        (),
        "Python modules to import for their @task handlers, comma separated (myapp.tasks).",
        parse_list,
    )
    metrics_port: int | None = setting(
        "SLUICE_METRICS_PORT",
        None,
        "Serve Prometheus metrics on this port (unset: no metrics endpoint). Under "
        "`sluice up`: worker N serves on this port + N - 1.",
        parse_port,
    )
    metrics_host: str = setting(
        "SLUICE_METRICS_HOST",
        "127.0.0.1",
        "Address the metrics endpoint listens on (0.0.0.0: every interface, as a "
        "container needs for Prometheus to reach it).",
    )
    maintenance: bool = setting(
        "SLUICE_MAINTENANCE",
        True,
        "Take part in the maintenance leader election (promote scheduled jobs, rescue "
        "expired leases, fire cron schedules, prune).",
        parse_bool,
    )
    leader_ttl: float = setting(
        "SLUICE_LEADER_TTL",
        15.0,
        "Lease of the maintenance leader; another worker takes over this long after "
        "the leader dies.",
        duration_setting,
    )
    promote_interval: float = setting(
        "SLUICE_PROMOTE_INTERVAL",
        1.0,
        "Longest sleep between promotions of due scheduled jobs (the leader sleeps until "
        "the next one is due, at most this long).",
        duration_setting,
    )
    rescue_interval: float = setting(
        "SLUICE_RESCUE_INTERVAL",
        5.0,
        "How often the leader rescues expired leases.",
        duration_setting,
    )
    cron_interval: float = setting(
        "SLUICE_CRON_INTERVAL",
        1.0,
        "Longest sleep between cron passes (the leader sleeps until the next schedule is "
        "due, at most this long).",
        duration_setting,
    )
    cron_misfire_grace: float = setting(
        "SLUICE_CRON_MISFIRE_GRACE",
        60.0,
        "An occurrence older than this when the scheduler sees it was missed (downtime): "
        "the schedule's misfire policy decides whether it runs.",
        duration_setting,
    )
    prune_interval: float = setting(
        "SLUICE_PRUNE_INTERVAL", 60.0, "How often the leader prunes old jobs.", duration_setting
    )
    retention: float = setting(
        "SLUICE_RETENTION",
        7 * 86400.0,
        "Finished jobs (and DAG runs) are deleted this long after they finished; failed "
        "jobs stay while their dead letter is unresolved.",
        duration_setting,
    )
    worker_retention: float = setting(
        "SLUICE_WORKER_RETENTION",
        86400.0,
        "Stopped or silent workers are removed from sluice.workers after this long.",
        duration_setting,
    )
    complete_batch: int = setting(
        "SLUICE_COMPLETE_BATCH",
        100,
        "Flush finished jobs to the database once this many are waiting...",
        int,
    )
    complete_interval: float = setting(
        "SLUICE_COMPLETE_INTERVAL",
        0.005,
        "...or once the oldest has waited this long.",
        duration_setting,
    )
    output_tail: int = setting(
        "SLUICE_OUTPUT_TAIL",
        4096,
        "Bytes of a shell task's stdout and of its stderr kept in the attempt log.",
        int,
    )
    pool_size: int = setting(
        "SLUICE_WORKER_POOL_SIZE",
        4,
        "Database connections for claims, progress and maintenance (plus one for "
        "LISTEN, one for completions and one for the lease keeper).",
        int,
    )

    def __post_init__(self) -> None:
        check_queues(self.queues)
        if self.concurrency < 1:
            raise SettingsError("SLUICE_CONCURRENCY: must be at least 1")
        if self.heartbeat_interval <= 0 or self.lease_ttl < 2 * self.heartbeat_interval:
            raise SettingsError(
                "SLUICE_LEASE_TTL must be at least twice SLUICE_HEARTBEAT_INTERVAL "
                f"(got {self.lease_ttl}s and {self.heartbeat_interval}s), or leases would "
                "expire between heartbeats"
            )
        if self.complete_batch < 1:
            raise SettingsError("SLUICE_COMPLETE_BATCH: must be at least 1")
        if self.worker_id is None:
            object.__setattr__(self, "worker_id", default_worker_id())

    @property
    def id(self) -> str:
        """The worker id (always set after construction)."""
        assert self.worker_id is not None
        return self.worker_id
