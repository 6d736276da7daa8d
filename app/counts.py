"""Counts per job state, shared by the resources that report them (queues, runs)."""

from __future__ import annotations

from msgspec import Struct

STATES = ("blocked", "scheduled", "ready", "running", "succeeded", "failed", "cancelled")


class StateCounts(Struct, kw_only=True):
    """How many jobs are in each state."""

    blocked: int
    scheduled: int
    ready: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


def spread(counts: dict[str, int]) -> dict[str, int]:
    """A `{state: n}` object with every state present (zero when absent)."""
    return {state: counts.get(state, 0) for state in STATES}
