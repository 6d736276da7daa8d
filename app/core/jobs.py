"""Facts about jobs, runs and schedules, declared once.

The database is the final judge of every value (column defaults, CHECK
constraints, domains, enum types in sql/schema/); this module states the same
facts for Python: the API validates requests with them, the worker and the CLI
read them, the docs quote them. tests/api/test_declarations.py pairs each one
with the migrated catalog, so the two cannot drift apart silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Literal, get_args

# --- States (the enum types sluice.job_state and sluice.run_state) -------------

JobState = Literal[
    "blocked",
    "scheduled",
    "ready",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)

# How a job ends (sluice.state_is_terminal). `skipped` is a DAG node's only.
TerminalState = Literal["succeeded", "failed", "cancelled", "skipped"]
TERMINAL_STATES: tuple[TerminalState, ...] = get_args(TerminalState)

# The outcomes `notify` can name (notify_valid): how a job or a run ended.
Outcome = Literal["succeeded", "failed", "cancelled"]

RunState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RUN_STATES: tuple[RunState, ...] = get_args(RunState)

# --- DAG data flow (docs/dags.md) ---------------------------------------------------

# When a node runs, given how its parents ended (sluice.job_propagate).
TriggerRule = Literal["all_success", "all_done", "one_success", "one_failed", "none_failed"]
TRIGGER_RULES: tuple[TriggerRule, ...] = get_args(TriggerRule)
DEFAULT_TRIGGER: TriggerRule = "all_success"
# What a waiting DAG node waits for (the view sluice.waiting_nodes, column kind).
WaitingFor = Literal["signal", "duration", "map"]
WAIT_KINDS: tuple[WaitingFor, ...] = get_args(WaitingFor)
# The pseudo-task of a `wait` node: no worker ever claims it.
WAIT_TASK = "sluice.wait"
# Longest `wait: {for: ...}` or signal timeout, and run timeout, in seconds
# (domain sluice.flow_spec; now plus this stays inside the run_at range).
WAIT_SECONDS_MAX = 10 * 365 * 86400
# Most runs of one DAG (and concurrency key) running at once, as a definition may ask.
RUN_CONCURRENCY_MAX = 1_000_000

# --- What a job gets when a field is left out ----------------------------------

Backoff = Literal["exponential", "linear", "constant"]  # CHECK jobs_backoff_valid
BACKOFFS: tuple[Backoff, ...] = get_args(Backoff)

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class JobDefaults:
    """A job's settings when its submitter leaves them out (sluice.jobs' column
    defaults, sluice.enqueue's argument defaults). Durations in seconds."""

    queue: str = "default"
    priority: int = 0
    max_attempts: int = 5
    backoff: Backoff = "exponential"
    backoff_base: float = 1.0
    backoff_max: float = 3600.0
    timeout: float | None = None  # null: the worker's SLUICE_DEFAULT_TIMEOUT


JOB_DEFAULTS = JobDefaults()
DEFAULT_QUEUE = JOB_DEFAULTS.queue
# A worker taking this "queue" takes every queue (sluice.job_claim); the domain
# sluice.queue_name refuses it as a real queue's name.
ANY_QUEUE = "*"

# --- Ranges ----------------------------------------------------------------------

DAY = 86400
YEAR = 365 * DAY

PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000
MAX_ATTEMPTS_MIN, MAX_ATTEMPTS_MAX = 1, 1000  # CHECK jobs_max_attempts_range (attempts still ahead)
# Longest attempt timeout and retry delay (backoff base or cap), in seconds:
# domains sluice.job_timeout and sluice.job_backoff.
TIMEOUT_SECONDS_MAX = 30 * DAY
BACKOFF_SECONDS_MAX = 30 * DAY
# Longest `delay_seconds` at submission: now plus this stays far inside the run_at range.
DELAY_SECONDS_MAX = 10 * YEAR
QUEUE_CONCURRENCY_MAX = 1_000_000

# When a job may run: from RUN_AT_MIN up to (not including) RUN_AT_END (domain
# sluice.job_run_at). Every value inside is read back by every client in any
# session time zone; a value outside is a 422 naming `run_at`, never a job
# stored and then unreadable.
RUN_AT_MIN = datetime(1900, 1, 1, tzinfo=UTC)
RUN_AT_END = datetime(9000, 1, 1, tzinfo=UTC)

# Deepest nesting of a JSON document a job or a DAG carries: no value more than
# this many levels below its top (sluice.json_nesting_ok).
MAX_JSON_DEPTH = 100

# --- Schedules -------------------------------------------------------------------

Misfire = Literal["latest", "all", "skip"]  # CHECK schedules_misfire_valid
MISFIRES: tuple[Misfire, ...] = get_args(Misfire)


@dataclass(frozen=True)
class ScheduleDefaults:
    """A schedule's settings when its creator leaves them out (sluice.schedules' defaults)."""

    timezone: str = "UTC"
    misfire: Misfire = "latest"
    enabled: bool = True


SCHEDULE_DEFAULTS = ScheduleDefaults()

# --- Names -----------------------------------------------------------------------

_NAME_CHARS = "[A-Za-z0-9_.:-]"


@dataclass(frozen=True)
class NameRule:
    """What a name may look like: a first character, then up to `max_length - 1`
    more of letters, digits and `_ . : -`."""

    first: str
    max_length: int
    constraint: str | None  # the domain or CHECK constraint that enforces it in SQL

    @property
    def pattern(self) -> str:
        return f"^{self.first}{_NAME_CHARS}{{0,{self.max_length - 1}}}$"

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)

    def match(self, value: object) -> bool:
        return isinstance(value, str) and self.regex.match(value) is not None

    @property
    def rule(self) -> str:
        """The rule in words, for error messages."""
        first = {
            "[A-Za-z0-9]": "a letter or digit",
            "[A-Za-z_]": "a letter or _",
            "[A-Za-z0-9_]": "a letter, digit or _",
        }[self.first]
        return f"{first}, then letters, digits, _ . : - (at most {self.max_length})"


QUEUE_NAME = NameRule("[A-Za-z0-9]", 64, "queue_name_valid")  # domain sluice.queue_name
TASK_NAME = NameRule("[A-Za-z_]", 200, "task_name_valid")  # domain sluice.task_name
TENANT_NAME = NameRule("[A-Za-z0-9]", 64, "tenant_name_valid")  # domain sluice.tenant_name
DAG_NAME = NameRule("[A-Za-z0-9]", 128, "dags_name_valid")
SCHEDULE_NAME = NameRule("[A-Za-z0-9]", 128, "schedules_name_valid")
# A node's id inside a DAG definition; SQL keeps it in jobs.node, unchecked.
NODE_ID = NameRule("[A-Za-z0-9_]", 128, None)
