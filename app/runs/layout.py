"""Where to draw a run's nodes: laid out by dependency depth, left to right.

The layout is grandalf's Sugiyama (layered) layout, the algorithm behind
Graphviz's `dot`: each node goes in the layer of its dependency depth, the order
within each layer is chosen to reduce edge crossings, and an edge that spans
several layers is routed through them. It runs here, once per run shape
(memoised), so browsers only draw the SVG.

Its cost grows with the nodes plus every layer each edge crosses, so a run past
DRAW_LIMIT nodes or SEGMENT_LIMIT edge segments is not drawn node by node:
those come back with their depth only (`drawn: false`), for a summary per
depth, which stays readable and cheap at any size.
"""

from __future__ import annotations

import functools
from graphlib import TopologicalSorter

from grandalf.graphs import Edge, Graph, Vertex
from grandalf.layouts import SugiyamaLayout

from sluice.runs.schemas import EdgePath, NodePlace, RunEdge, RunLayout, RunNode

NODE_WIDTH = 168.0
NODE_HEIGHT = 40.0
LAYER_GAP = 64.0  # between depths (horizontal)
NODE_GAP = 16.0  # between nodes of one depth, and between unconnected parts (vertical)
MARGIN = 16.0
DRAW_LIMIT = 500
SEGMENT_LIMIT = 10_000
ORDERING_ROUNDS = 2


def depths(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's dependency depth: 0 without parents, else one more than its deepest parent."""
    parents: dict[str, list[str]] = {node: [] for node in nodes}
    for parent, child in edges:
        parents[child].append(parent)
    depth: dict[str, int] = {}
    for node in TopologicalSorter(parents).static_order():
        depth[node] = 1 + max((depth[p] for p in parents[node]), default=-1)
    return depth


class _View:
    """What grandalf reads (w, h) and writes (xy) on a vertex, or a path on an edge.

    grandalf stacks layers vertically; we want them left to right, so a node's
    extent across layers (h) is its width and within a layer (w) its height.
    """

    def __init__(self) -> None:
        self.w = NODE_HEIGHT
        self.h = NODE_WIDTH
        self.xy = (0.0, 0.0)
        self.path: list[tuple[float, float]] = []

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.path = points


Point = tuple[float, float]


@functools.lru_cache(maxsize=64)
def _sugiyama(
    nodes: tuple[str, ...], edges: tuple[tuple[str, str], ...]
) -> tuple[dict[str, Point], dict[tuple[str, str], list[Point]], Point]:
    """Node centres, edge routes (centre to centre) and the drawing's size, left
    to right with a margin all round; memoised by the run's shape."""
    vertices = {node: Vertex(node) for node in nodes}
    for vertex in vertices.values():
        vertex.view = _View()
    graph_edges = []
    for parent, child in edges:
        edge = Edge(vertices[parent], vertices[child])
        edge.view = _View()
        graph_edges.append(edge)
    graph = Graph(list(vertices.values()), graph_edges)

    centres: dict[str, Point] = {}
    routes: dict[tuple[str, str], list[Point]] = {}
    bottom = MARGIN - NODE_GAP  # unconnected parts of the run are stacked, each below the last
    for component in graph.C:
        sugiyama = SugiyamaLayout(component)
        sugiyama.xspace, sugiyama.yspace = NODE_GAP, LAYER_GAP
        sugiyama.init_all()
        sugiyama.draw(ORDERING_ROUNDS)
        # grandalf's (x within a layer, y across layers) becomes our (y, x).
        placed = {v.data: (v.view.xy[1], v.view.xy[0]) for v in component.sV}
        paths = {(e.v[0].data, e.v[1].data): [(y, x) for x, y in e.view.path] for e in component.sE}
        # Long edges bend through points outside the nodes' extent: count them in.
        ys = [y - NODE_HEIGHT / 2 for _, y in placed.values()]
        ys += [y for path in paths.values() for _, y in path]
        shift = bottom + NODE_GAP - min(ys)
        for node, (x, y) in placed.items():
            centres[node] = (x + MARGIN, y + shift)
        for key, path in paths.items():
            routes[key] = [(x + MARGIN, y + shift) for x, y in path]
        ys = [y + NODE_HEIGHT / 2 for _, y in placed.values()]
        ys += [y for path in paths.values() for _, y in path]
        bottom = max(ys) + shift
    # Layers start at x = 0 in every component (grandalf centres the first at NODE_WIDTH / 2).
    width = max((x for x, _ in centres.values()), default=0.0) + NODE_WIDTH / 2 + MARGIN
    return centres, routes, (width, bottom + MARGIN)


def layout(run_id: int, nodes: list[RunNode], edges: list[RunEdge]) -> RunLayout:
    """The drawing of a run (nodes in creation order, edges parent -> child)."""
    ids = [node.id for node in nodes]
    pairs = [(edge.parent, edge.child) for edge in edges]
    depth = depths(ids, pairs)
    segments = sum(depth[child] - depth[parent] for parent, child in pairs)
    sizes = {"node_width": NODE_WIDTH, "node_height": NODE_HEIGHT}
    if len(ids) > DRAW_LIMIT or segments > SEGMENT_LIMIT:
        return RunLayout(
            run_id=run_id,
            drawn=False,
            width=0.0,
            height=0.0,
            nodes=[NodePlace(id=n.id, job_id=n.job_id, depth=depth[n.id]) for n in nodes],
            edges=[],
            **sizes,
        )
    centres, routes, (width, height) = _sugiyama(tuple(ids), tuple(pairs))
    places = [
        NodePlace(id=n.id, job_id=n.job_id, depth=depth[n.id], x=round(x, 1), y=round(y, 1))
        for n in nodes
        for x, y in [centres[n.id]]
    ]
    paths = []
    for parent, child in pairs:
        points = [(round(x, 1), round(y, 1)) for x, y in routes[(parent, child)]]
        # From the parent's right side to the child's left side, not centre to centre.
        points[0] = (points[0][0] + NODE_WIDTH / 2, points[0][1])
        points[-1] = (points[-1][0] - NODE_WIDTH / 2, points[-1][1])
        paths.append(EdgePath(parent=parent, child=child, points=points))
    return RunLayout(
        run_id=run_id,
        drawn=True,
        width=round(width, 1),
        height=round(height, 1),
        nodes=places,
        edges=paths,
        **sizes,
    )
