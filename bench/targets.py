"""The issue's targets, and which `limit` figure each throughput is a fraction of."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    figure: str  # "<scenario>.<figure>"
    compare: str  # ">=" or "<="
    value: float
    text: str

    def met(self, figures: dict[str, float]) -> bool | None:
        actual = figures.get(self.figure)
        if actual is None:
            return None
        return {">=": operator.ge, "<=": operator.le}[self.compare](actual, self.value)


TARGETS = (
    Target("drain.jobs_per_s", ">=", 25_000, "drain >= 25,000 jobs/s"),
    Target("drain.fraction_of_limit", ">=", 0.70, "drain >= 70 % of limit's claim + complete"),
    Target("enqueue.b_copy", ">=", 100_000, "batch enqueue >= 100,000 jobs/s"),
    Target("latency.p50_ms", "<=", 1.3, "wake-up p50 <= 1.3 ms"),
    Target("latency.p99_ms", "<=", 4.0, "wake-up p99 <= 4 ms"),
    Target("dag.chain_release_p50_ms", "<=", 3.0, "DAG edge release p50 <= 3 ms"),
    Target("backlog.ratio", ">=", 0.8, "backlog ratio (largest / smallest) >= 0.8"),
    Target("bloat.during_fraction", ">=", 0.5, "bloat: throughput during >= 50 % of normal"),
    Target("bloat.recovery_s", "<=", 60.0, "bloat: back to normal within 60 s"),
    Target("soak.all_counts_add_up", ">=", 1, "soak: no job lost, every count adds up"),
)  # fmt: skip

# Throughput figures and the `limit` figure they are read against.
LIMIT_OF = {
    "enqueue.a_sql_single": "limit.insert_1",
    "enqueue.b_copy": "limit.insert_100",
    "enqueue.b_submit_many": "limit.insert_100",
    "enqueue.c_rest_single": "limit.insert_1",
    "enqueue.d_rest_batch": "limit.insert_100",
    "drain.jobs_per_s": "limit.claim_complete_100",
    "backlog.smallest_jobs_per_s": "limit.claim_complete_100",
    "backlog.largest_jobs_per_s": "limit.claim_complete_100",
    "bloat.normal_jobs_per_s": "limit.claim_complete_100",
    "bloat.during_jobs_per_s": "limit.claim_complete_100",
}


def evaluate(figures: dict[str, float], checks: dict[str, int]) -> list[dict[str, Any]]:
    """Each target with the measured figure (or check) and whether it was met (None:
    not measured)."""
    values = {**checks, **figures}
    return [
        {"target": t.text, "figure": t.figure, "value": values.get(t.figure), "met": t.met(values)}
        for t in TARGETS
    ]
