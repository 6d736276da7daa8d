"""The issues' targets, and which `limit` figure each throughput is a fraction of.

A target names a figure (`<scenario>.<figure>`), a comparison and a value. With
`of`, the value is a fraction of that `limit` figure from the same run (issue
15 states its throughput targets that way: on a shared machine only figures
taken in the same minutes compare). `settings` says on which server settings
it applies (`bench --server-settings`): issue 15's targets are for PostgreSQL's
defaults, what users first run; its "keep today's figures" ones for the tuned
server; the older targets hold everywhere.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

EVERYWHERE = ("default", "tuned", "external")


@dataclass(frozen=True)
class Target:
    figure: str  # "<scenario>.<figure>"
    compare: str  # ">=" or "<="
    value: float
    text: str
    of: str | None = None  # a `limit` figure: `value` is then a fraction of it
    settings: tuple[str, ...] = EVERYWHERE

    def bound(self, figures: dict[str, float]) -> float | None:
        """The value the figure is compared with (None: its `limit` was not measured)."""
        if self.of is None:
            return self.value
        base = figures.get(self.of)
        return None if not base else self.value * base

    def met(self, figures: dict[str, float]) -> bool | None:
        actual, bound = figures.get(self.figure), self.bound(figures)
        if actual is None or bound is None:
            return None
        return {">=": operator.ge, "<=": operator.le}[self.compare](actual, bound)


DEFAULT = ("default",)
TUNED = ("tuned",)
CLAIM_100 = "limit.claim_complete_100"

TARGETS = (
    # Issue 15, on PostgreSQL's default settings.
    Target("wal.life_bytes_per_job", "<=", 1000,
           "a no-op job's whole life <= 1,000 WAL bytes", settings=DEFAULT),
    Target("drain.jobs_per_s_20k", ">=", 0.70, "drain of 20,000 >= 70 % of limit's claim + "
           "complete at 100", of=CLAIM_100, settings=DEFAULT),
    Target("drain.jobs_per_s_200k", ">=", 0.70, "drain of 200,000 >= 70 % of limit's claim + "
           "complete at 100", of=CLAIM_100, settings=DEFAULT),
    Target("drain.startup_ms", "<=", 200, "worker start-up to its first claim < 200 ms",
           settings=DEFAULT),
    Target("latency.p50_ms", "<=", 1.0, "wake-up p50 <= 1 ms", settings=DEFAULT),
    Target("latency.p99_ms", "<=", 3.0, "wake-up p99 <= 3 ms", settings=DEFAULT),
    Target("enqueue.b_copy", ">=", 0.80, "COPY >= 80 % of limit's 100-row insert",
           of="limit.insert_100", settings=DEFAULT),
    Target("enqueue.b_submit_many", ">=", 0.80, "the API's set-based insert >= 80 % of "
           "limit's 100-row insert", of="limit.insert_100", settings=DEFAULT),
    Target("enqueue.a_sql_single", ">=", 0.50, "single-row INSERT from 16 clients >= 50 % of "
           "limit's 1-row insert", of="limit.insert_1", settings=DEFAULT),
    # Issue 14: the Python API against the plain SQL it mirrors, same run (ratios).
    Target("enqueue.e_python_single_vs_a_sql_single", ">=", 0.90,
           "Python task.enqueue >= 90 % of a plain INSERT's jobs/s"),
    Target("enqueue.f_python_many_vs_b_copy", ">=", 0.90,
           "Python task.enqueue_many >= 90 % of COPY's jobs/s"),
    # Issue 15: today's tuned-server figures, kept at least as good.
    Target("drain.jobs_per_s_200k", ">=", 48_000, "tuned: drain of 200,000 >= 48,000 jobs/s",
           settings=TUNED),
    Target("latency.p50_ms", "<=", 0.8, "tuned: wake-up p50 <= 0.8 ms", settings=TUNED),
    Target("dag.chain_release_p50_ms", "<=", 0.8, "tuned: DAG edge release p50 <= 0.8 ms",
           settings=TUNED),
    # Earlier issues, on any server.
    Target("drain.jobs_per_s_200k", ">=", 25_000, "drain >= 25,000 jobs/s"),
    Target("enqueue.b_copy", ">=", 100_000, "batch enqueue >= 100,000 jobs/s"),
    Target("latency.p50_ms", "<=", 1.3, "wake-up p50 <= 1.3 ms"),
    Target("latency.p99_ms", "<=", 4.0, "wake-up p99 <= 4 ms"),
    Target("dag.chain_release_p50_ms", "<=", 3.0, "DAG edge release p50 <= 3 ms"),
    Target("backlog.ratio", ">=", 0.8, "backlog ratio (largest / smallest) >= 0.8"),
    Target("bloat.during_fraction", ">=", 0.5, "bloat: throughput during >= 50 % of normal"),
    Target("bloat.recovery_s", "<=", 60.0, "bloat: back to normal within 60 s"),
    Target("soak.all_counts_add_up", ">=", 1, "soak: no job lost, every count adds up"),
)  # fmt: skip

# Throughput figures and the `limit` figure they are read against. A name ending
# in `*` covers every figure that starts with it (drain's one per queue size).
LIMIT_OF = {
    "enqueue.a_sql_single": "limit.insert_1",
    "enqueue.b_copy": "limit.insert_100",
    "enqueue.b_submit_many": "limit.insert_100",
    "enqueue.c_rest_single": "limit.insert_1",
    "enqueue.d_rest_batch": "limit.insert_100",
    "drain.jobs_per_s*": CLAIM_100,
    "backlog.smallest_jobs_per_s": CLAIM_100,
    "backlog.largest_jobs_per_s": CLAIM_100,
    "bloat.normal_jobs_per_s": CLAIM_100,
    "bloat.during_jobs_per_s": CLAIM_100,
}


def limit_of(figure: str) -> str | None:
    """The `limit` figure `figure` is read against, if any."""
    for name, base in LIMIT_OF.items():
        if figure == name or (name.endswith("*") and figure.startswith(name[:-1])):
            return base
    return None


def fractions_of_limit(figures: dict[str, float]) -> dict[str, float]:
    """Each throughput figure as a fraction of its `limit` figure (both measured)."""
    out = {}
    for name, value in figures.items():
        base = limit_of(name)
        if base is not None and figures.get(base):
            out[name] = round(value / figures[base], 3)
    return out


def evaluate(
    figures: dict[str, float], checks: dict[str, int], settings: str = "default"
) -> list[dict[str, Any]]:
    """The targets that apply on `settings`, each with the measured figure (or
    check), the bound it was held to, and whether it was met (None: not measured)."""
    values = {**checks, **figures}
    return [
        {
            "target": t.text,
            "figure": t.figure,
            "value": values.get(t.figure),
            "bound": t.bound(values),
            "met": t.met(values),
        }
        for t in TARGETS
        if settings in t.settings
    ]
