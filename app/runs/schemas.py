"""Request and response bodies of the runs API (a run, its nodes and edges are
sluice.core.engine's Run, RunNode and RunEdge)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from sluice.core.engine import Run, RunEdge, RunNode
from sluice.http.shapes import IdempotencyKey, Notify, Params


class RunStart(Struct, forbid_unknown_fields=True, kw_only=True):
    """Start a run of a stored DAG (its newest version)."""

    params: Params = {}
    notify: Notify | None = None
    idempotency_key: IdempotencyKey | None = None


class RunSubmit(RunStart, forbid_unknown_fields=True, kw_only=True):
    """Start a run of an inline definition (the format of PUT /api/v1/dags/{name})."""

    definition: Annotated[
        dict[str, Any],
        Meta(description="`{nodes: [...]}`; every problem is reported at once, with its place."),
    ]


class RunGraph(Struct, kw_only=True):
    """A run's nodes and edges, ready for drawing."""

    run: Run
    nodes: list[RunNode]
    edges: list[RunEdge]


class NodePlace(Struct, kw_only=True):
    """Where one node is drawn: the centre of its box (null when the run is not drawn)."""

    id: str
    job_id: int
    depth: Annotated[int, Meta(description="0 without parents, else 1 + its deepest parent's.")]
    x: float | None = None
    y: float | None = None


class EdgePath(Struct, kw_only=True):
    """The route of one edge, from the parent's box to the child's, as (x, y) points."""

    parent: str
    child: str
    points: list[tuple[float, float]]


class RunLayout(Struct, kw_only=True):
    """A run's DAG laid out by dependency depth, left to right (Sugiyama layout).
    `drawn` is false for runs too large to draw node by node: nodes then carry
    their depth only, and `edges` is empty."""

    run_id: int
    drawn: bool
    width: float
    height: float
    node_width: float
    node_height: float
    nodes: list[NodePlace]
    edges: list[EdgePath]


class SignalIn(Struct, forbid_unknown_fields=True, kw_only=True):
    """A signal to a node waiting for one (`wait: {signal: true}`)."""

    payload: Annotated[
        Any, Meta(description="Any JSON: the node's result (at most sluice.max_result_bytes).")
    ] = msgspec.field(default_factory=dict)


class RerunIn(Struct, forbid_unknown_fields=True, kw_only=True):
    """Run a node and everything below it again."""

    from_: Annotated[str, Meta(description="The node to rerun from.", min_length=1)] = (
        msgspec.field(name="from")
    )


class BackfillIn(Struct, forbid_unknown_fields=True, kw_only=True):
    """Start the runs a cron schedule of the DAG would have started from `from` to `to`."""

    from_: Annotated[datetime, Meta(description="The first occurrence may be this time.")] = (
        msgspec.field(name="from")
    )
    to: Annotated[datetime, Meta(description="The last occurrence may be this time.")]
    schedule: Annotated[
        str | None,
        Meta(description="The schedule's name, when several schedules start this DAG."),
    ] = None
    params: Params | None = None


class BackfillOut(Struct, kw_only=True):
    """The runs of a backfill, oldest occurrence first: those it started, and those
    that existed already (started by the scheduler or an earlier backfill)."""

    runs: list[int]
    existing: list[int]
