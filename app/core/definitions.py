"""DAG definitions: check one completely, then normalise it for SQL.

A definition lists nodes, as a list or as a mapping from id to node:

    nodes:
      - id: extract
        task: http                      # or a kind with its fields: `http: {url: ...}`
        payload: {url: "https://..."}
        queue: etl
        priority: 0
        retry: {max_attempts: 3, backoff: exponential, base: 10s, max: 1h}   # or `retry: 3`
        timeout: 5m
      - id: load
        task: sleep
        payload: {seconds: 2}
        depends_on: [extract]

`check` reports every problem at once, each with its location
(`nodes[1].depends_on[0]`), and costs time linear in nodes plus edges, so a
10,000-node DAG is checked in milliseconds. The normalised form is the one
sluice.dag_run_create reads (see sql/schema/33_dag_runs.sql): every field
spelled out, durations in seconds, nodes in topological order.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from typing import Any

from sluice.core.durations import parse_duration
from sluice.core.jobs import (
    BACKOFF_SECONDS_MAX,
    BACKOFFS,
    JOB_DEFAULTS,
    MAX_ATTEMPTS_MAX,
    MAX_ATTEMPTS_MIN,
    NODE_ID,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_NAME,
    TIMEOUT_SECONDS_MAX,
)
from sluice.core.problems import Problems, json_problems
from sluice.core.tasks import BUILTIN_PAYLOADS, TaskCatalog, payload_problems

# A node's payload sits this many levels below the top of the stored definition
# ({"nodes": [{"payload": ...}]}), whose nesting the database bounds as a whole.
PAYLOAD_LEVEL = 3
NODE_FIELDS = {"id", "task", "payload", "depends_on", "queue", "priority", "retry", "timeout"}
RETRY_FIELDS = {"max_attempts", "backoff", "base", "max"}
# `{{ params.name }}` placeholders, filled in when a run starts (sluice.dag_render).
PLACEHOLDER = re.compile(r"\{\{\s*params\.[A-Za-z0-9_]+\s*\}\}")


def _as_rendered(value: Any) -> Any:
    """`value` with each placeholder replaced by a plain word, as a run will render it,
    so that `https://x/{{ params.day }}` is checked as the URL it becomes."""
    if isinstance(value, str):
        return PLACEHOLDER.sub("param", value)
    if isinstance(value, dict):
        return {k: _as_rendered(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_rendered(v) for v in value]
    return value


class DefinitionError(Exception):
    """A definition with problems; `problems` lists (location, message) pairs."""

    def __init__(self, problems: Problems) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entries(nodes: Any, where: str) -> tuple[list[tuple[str, dict]], Problems]:
    """(location, node) pairs from a list of nodes or a mapping of id to node."""
    if isinstance(nodes, dict):
        pairs = []
        for key, node in nodes.items():
            loc = f"{where}.{key}"
            if isinstance(node, dict) and "id" not in node:
                node = {"id": key, **node}
            pairs.append((loc, node))
    elif isinstance(nodes, list):
        pairs = [(f"{where}[{i}]", node) for i, node in enumerate(nodes)]
    else:
        return [], [(where, "must be a list of nodes (or a mapping of id to node)")]
    if not pairs:
        return [], [(where, "a DAG needs at least one node")]
    problems = [(loc, "must be an object") for loc, node in pairs if not isinstance(node, dict)]
    return [(loc, node) for loc, node in pairs if isinstance(node, dict)], problems


def _task_and_payload(node: dict, loc: str) -> tuple[Any, Any, Problems]:
    """The node's task and payload, from `task` + `payload` or a kind key (`http: {...}`)."""
    kinds = [k for k in node if k in BUILTIN_PAYLOADS and k not in NODE_FIELDS]
    if "task" in node:
        if kinds:
            return None, None, [(f"{loc}.{kinds[0]}", "give either task or a task kind, not both")]
        return node["task"], node.get("payload", {}), []
    if len(kinds) == 1:
        if "payload" in node:
            return (
                None,
                None,
                [
                    (
                        f"{loc}.payload",
                        f"the payload of a `{kinds[0]}` node is its `{kinds[0]}` field",
                    )
                ],
            )
        payload = node[kinds[0]]
        return kinds[0], {} if payload is None else payload, []
    if kinds:
        return None, None, [(loc, f"one task kind per node, found {', '.join(kinds)}")]
    return None, None, [(f"{loc}.task", "is required")]


def _retry(value: Any, loc: str, out: dict, problems: Problems) -> None:
    if _is_int(value):
        value = {"max_attempts": value}
    if not isinstance(value, dict):
        problems.append(
            (loc, "must be a number of attempts or an object with max_attempts, backoff, base, max")
        )
        return
    for key in value:
        if key not in RETRY_FIELDS:
            problems.append(
                (f"{loc}.{key}", f"unknown field (use {', '.join(sorted(RETRY_FIELDS))})")
            )
    if "max_attempts" in value:
        attempts = value["max_attempts"]
        if _is_int(attempts) and MAX_ATTEMPTS_MIN <= attempts <= MAX_ATTEMPTS_MAX:
            out["max_attempts"] = attempts
        else:
            problems.append(
                (
                    f"{loc}.max_attempts",
                    f"must be a whole number from {MAX_ATTEMPTS_MIN} to {MAX_ATTEMPTS_MAX}",
                )
            )
    if "backoff" in value:
        if value["backoff"] in BACKOFFS:
            out["backoff"] = value["backoff"]
        else:
            problems.append((f"{loc}.backoff", f"must be one of {', '.join(BACKOFFS)}"))
    for key, field in (("base", "backoff_base"), ("max", "backoff_max")):
        if key in value:
            seconds = parse_duration(value[key])
            if seconds is None or seconds > BACKOFF_SECONDS_MAX:
                problems.append(
                    (f"{loc}.{key}", f"bad duration {value[key]!r} (write 30s, 5m, 1h)")
                )
            else:
                out[field] = seconds
    if out["backoff_max"] < out["backoff_base"]:
        problems.append((f"{loc}.max", "must be at least the base delay"))


def _node(node: dict, loc: str, catalog: TaskCatalog, problems: Problems) -> dict | None:
    """The normalised node, adding what is wrong with it to `problems`."""
    out: dict[str, Any] = {
        "id": node.get("id"),
        **dataclasses.asdict(JOB_DEFAULTS),
        "depends_on": [],
    }
    before = len(problems)
    node_id = node.get("id")
    if not NODE_ID.match(node_id):
        problems.append((f"{loc}.id", f"must be a name: {NODE_ID.rule}"))
    for key in node:
        if key not in NODE_FIELDS and key not in BUILTIN_PAYLOADS:
            problems.append((f"{loc}.{key}", "unknown field"))
    task, payload, found = _task_and_payload(node, loc)
    problems += found
    if not found:
        # A kind key holds the payload itself: point at it rather than at `payload`.
        payload_loc = f"{loc}.payload" if "task" in node else f"{loc}.{task}"
        found = catalog.task_problems(task, f"{loc}.task") or json_problems(
            payload, payload_loc, level=PAYLOAD_LEVEL
        )
        if not found:
            found = payload_problems(task, _as_rendered(payload), payload_loc)
        problems += found
        out["task"], out["payload"] = task, payload
    deps = node.get("depends_on", [])
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list):
        problems.append((f"{loc}.depends_on", "must be a list of node ids"))
        deps = []
    for i, dep in enumerate(deps):
        if not isinstance(dep, str):
            problems.append((f"{loc}.depends_on[{i}]", "must be a node id"))
    out["depends_on"] = list(dict.fromkeys(d for d in deps if isinstance(d, str)))
    if "queue" in node:
        if QUEUE_NAME.match(node["queue"]):
            out["queue"] = node["queue"]
        else:
            problems.append((f"{loc}.queue", f"must be a queue name: {QUEUE_NAME.rule}"))
    if "priority" in node:
        if _is_int(node["priority"]) and PRIORITY_MIN <= node["priority"] <= PRIORITY_MAX:
            out["priority"] = node["priority"]
        else:
            problems.append(
                (f"{loc}.priority", f"must be a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}")
            )
    if "retry" in node:
        _retry(node["retry"], f"{loc}.retry", out, problems)
    if node.get("timeout") is not None:
        seconds = parse_duration(node["timeout"])
        if seconds is None or seconds == 0 or seconds > TIMEOUT_SECONDS_MAX:
            problems.append(
                (f"{loc}.timeout", f"bad duration {node['timeout']!r} (write 30s, 5m, 1h)")
            )
        else:
            out["timeout"] = seconds
    return out if len(problems) == before else None


def _cycle(remaining: dict[str, dict]) -> list[str]:
    """A cycle among `remaining` nodes (each has a parent among them), parents first."""
    start = next(iter(remaining))
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in remaining[node]["depends_on"] if d in remaining)
    loop = [*path[seen[node] :], node]
    return loop[::-1]  # we walked from child to parent


def check(definition: Any, catalog: TaskCatalog, where: str = "") -> list[dict]:
    """The normalised nodes of `definition`, in topological order; or DefinitionError
    listing every problem (locations prefixed with `where`)."""
    prefix = f"{where}." if where else ""
    if not isinstance(definition, dict):
        raise DefinitionError([(where or "body", "must be an object with `nodes`")])
    problems: Problems = [
        (f"{prefix}{key}", "unknown field (a definition has nodes and description)")
        for key in definition
        if key not in ("nodes", "description")
    ]
    if "description" in definition and not isinstance(definition["description"], str | None):
        problems.append((f"{prefix}description", "must be a string"))
    entries, found = _entries(definition.get("nodes"), f"{prefix}nodes")
    problems += found

    nodes: dict[str, dict] = {}
    where_is: dict[str, str] = {}
    for loc, raw in entries:
        node = _node(raw, loc, catalog, problems)
        node_id = raw.get("id")
        if isinstance(node_id, str):
            if node_id in where_is:
                problems.append(
                    (f"{loc}.id", f"duplicate id {node_id!r} (also at {where_is[node_id]})")
                )
                continue
            where_is[node_id] = loc
        if node is not None:
            nodes[node_id] = node
    for loc, raw in entries:
        deps = raw.get("depends_on", [])
        for i, dep in enumerate(
            [deps] if isinstance(deps, str) else deps if isinstance(deps, list) else []
        ):
            if isinstance(dep, str) and dep not in where_is:
                problems.append((f"{loc}.depends_on[{i}]", f"unknown dependency {dep!r}"))
            elif dep == raw.get("id"):
                problems.append((f"{loc}.depends_on[{i}]", "a node cannot depend on itself"))
    if problems:
        raise DefinitionError(problems)

    order = _topological(nodes)
    if len(order) < len(nodes):
        done = set(order)
        loop = _cycle({k: v for k, v in nodes.items() if k not in done})
        raise DefinitionError([(f"{where_is[loop[0]]}.depends_on", "cycle: " + " -> ".join(loop))])
    return [nodes[node_id] for node_id in order]


def _topological(nodes: dict[str, dict]) -> list[str]:
    """Kahn's algorithm; keeps the given order when it is already topological."""
    position = {node_id: i for i, node_id in enumerate(nodes)}
    if all(position[d] < position[n] for n, node in nodes.items() for d in node["depends_on"]):
        return list(nodes)
    waiting = {n: len(node["depends_on"]) for n, node in nodes.items()}
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for n, node in nodes.items():
        for d in node["depends_on"]:
            children[d].append(n)
    ready = deque(n for n, count in waiting.items() if count == 0)
    order: list[str] = []
    while ready:
        n = ready.popleft()
        order.append(n)
        for child in children[n]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order
