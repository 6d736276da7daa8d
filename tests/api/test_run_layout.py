"""GET /api/v1/runs/{id}/layout: a run's DAG laid out by dependency depth."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sluice.runs import layout as run_layout
from sluice.runs.schemas import RunEdge, RunNode
from tests.api.conftest import bearer

RUNS = "/api/v1/runs"

# A diamond (a -> b, c -> d), a tail from the diamond (d -> e) and a stray node.
DIAMOND = {
    "nodes": [
        {"id": "a", "task": "noop"},
        {"id": "b", "task": "noop", "depends_on": ["a"]},
        {"id": "c", "task": "noop", "depends_on": ["a"]},
        {"id": "d", "task": "noop", "depends_on": ["b", "c"]},
        {"id": "e", "task": "noop", "depends_on": ["d", "a"]},
        {"id": "stray", "task": "noop"},
    ]
}


def _overlap(p, q, width, height) -> bool:
    return abs(p["x"] - q["x"]) < width and abs(p["y"] - q["y"]) < height


async def test_layout_places_nodes_by_depth_left_to_right(client, submitter):
    run = (await client.post(RUNS, json={"definition": DIAMOND}, headers=submitter)).json()
    answer = await client.get(f"{RUNS}/{run['id']}/layout", headers=bearer("viewer"))
    assert answer.status_code == 200, answer.text
    drawing = answer.json()
    assert drawing["drawn"] is True and drawing["run_id"] == run["id"]
    nodes = {n["id"]: n for n in drawing["nodes"]}
    assert {k: n["depth"] for k, n in nodes.items()} == {
        "a": 0,
        "b": 1,
        "c": 1,
        "d": 2,
        "e": 3,
        "stray": 0,
    }
    w, h = drawing["node_width"], drawing["node_height"]
    # Depth decides the column; nodes of one column are stacked, and no boxes overlap.
    assert nodes["a"]["x"] < nodes["b"]["x"] == nodes["c"]["x"] < nodes["d"]["x"] < nodes["e"]["x"]
    assert nodes["a"]["x"] == nodes["stray"]["x"]
    placed = list(nodes.values())
    assert not any(_overlap(p, q, w, h) for i, p in enumerate(placed) for q in placed[i + 1 :])
    for n in placed:
        assert w / 2 <= n["x"] <= drawing["width"] - w / 2
        assert h / 2 <= n["y"] <= drawing["height"] - h / 2
    # Edges run from the parent's right side to the child's left side; the long edge
    # a -> e bends through the columns it crosses.
    edges = {(e["parent"], e["child"]): e["points"] for e in drawing["edges"]}
    assert set(edges) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e"), ("a", "e")}
    for (parent, child), points in edges.items():
        assert points[0] == [nodes[parent]["x"] + w / 2, nodes[parent]["y"]]
        assert points[-1] == [nodes[child]["x"] - w / 2, nodes[child]["y"]]
    for points in edges.values():  # the drawing holds every bend
        assert all(0 <= x <= drawing["width"] and 0 <= y <= drawing["height"] for x, y in points)
    assert len(edges[("a", "e")]) == 4  # its ends and a bend in each of the 2 columns between
    assert [p[0] for p in edges[("a", "e")]] == sorted(p[0] for p in edges[("a", "e")])

    hidden = await client.get(f"{RUNS}/{run['id']}/layout", headers=bearer("admin", "other"))
    assert hidden.status_code == 200  # admins see every tenant
    other = await client.get(f"{RUNS}/{run['id']}/layout", headers=bearer("viewer", "other"))
    assert other.status_code == 404


def _node(node_id: str, job_id: int) -> RunNode:
    return RunNode(
        id=node_id,
        job_id=job_id,
        task="noop",
        queue="default",
        state="ready",
        attempt=0,
        max_attempts=1,
        started_at=datetime.now(UTC),
        finished_at=None,
        last_error=None,
        reason=None,
    )


def test_depths_follow_the_longest_path():
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("x", "c")]
    assert run_layout.depths(["a", "b", "c", "x"], edges) == {"a": 0, "b": 1, "c": 2, "x": 0}


@pytest.mark.parametrize("fan_out", [run_layout.DRAW_LIMIT, 2_000])
def test_runs_past_the_limit_get_depths_but_no_drawing(fan_out):
    nodes = [_node("root", 1), *(_node(f"n{i}", i + 2) for i in range(fan_out))]
    edges = [RunEdge("root", f"n{i}") for i in range(fan_out)]
    drawing = run_layout.layout(7, nodes, edges)
    assert drawing.drawn is False and drawing.edges == []
    assert [(n.id, n.depth, n.x) for n in drawing.nodes[:2]] == [("root", 0, None), ("n0", 1, None)]
    assert len(drawing.nodes) == fan_out + 1


def test_runs_with_too_many_edge_segments_are_not_drawn():
    # A 60-node chain, each node also depending on every earlier one: 1,770 edges
    # crossing ~36,000 columns in all; a drawing of that would be a solid smear.
    ids = [f"n{i}" for i in range(60)]
    edges = [RunEdge(ids[i], ids[j]) for j in range(60) for i in range(j)]
    drawing = run_layout.layout(8, [_node(n, i + 1) for i, n in enumerate(ids)], edges)
    assert drawing.drawn is False
    assert [n.depth for n in drawing.nodes] == list(range(60))
