"""DAG definitions: check one completely, then normalise it for SQL.

A definition lists nodes, as a list or as a mapping from id to node:

    params: {day: "2026-11-21"}         # defaults for {{ params.X }}; a run's params override them
    timeout: 2h                         # the run's deadline (what is left then is cancelled)
    concurrency: 2                      # at most 2 runs of this DAG at once (others queue) ...
    concurrency_key: "{{ params.customer }}"   # ... per value of this template
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
        payload: {seconds: "{{ nodes.extract.result.wait }}"}
        depends_on: [extract]
        trigger: all_success            # all_done | one_success | one_failed | none_failed
        when: "$.nodes.extract.result.rows > 0"
      - id: parts
        depends_on: [extract]
        task: noop
        map: "{{ nodes.extract.result.files }}"   # one job per element ({{ item }}, {{ index }})
      - id: approve
        depends_on: [load]
        wait: {signal: true, timeout: 24h, on_timeout: skip}   # or wait: {for: 10m}

`check` reports every problem of the document's structure at once, each with
its location (`nodes[1].depends_on[0]`), and costs time linear in nodes plus
edges, so a 10,000-node DAG is checked in milliseconds. Its templates and
conditions are checked by the database (sluice.dag_dataflow_problems, the
parser that renders them): `dataflow_nodes` gives that check its input. The
normalised form is the one sluice.dag_run_create reads (see
sql/schema/33_dag_runs.sql): every field spelled out, durations in seconds,
nodes in topological order. docs/dags.md describes the format for users.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from typing import Any

from psycopg import AsyncConnection

from sluice.core import engine
from sluice.core.durations import parse_duration
from sluice.core.jobs import (
    BACKOFF_SECONDS_MAX,
    BACKOFFS,
    DEFAULT_TRIGGER,
    JOB_DEFAULTS,
    MAX_ATTEMPTS_MAX,
    MAX_ATTEMPTS_MIN,
    NODE_ID,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_NAME,
    RUN_CONCURRENCY_MAX,
    TIMEOUT_SECONDS_MAX,
    TRIGGER_RULES,
    WAIT_SECONDS_MAX,
    WAIT_TASK,
)
from sluice.core.problems import Problems, json_problems
from sluice.core.tasks import BUILTIN_PAYLOADS, TaskCatalog, payload_problems

# A node's payload sits this many levels below the top of the stored definition
# ({"nodes": [{"payload": ...}]}), whose nesting the database bounds as a whole.
PAYLOAD_LEVEL = 3
NODE_FIELDS = {
    "id",
    "task",
    "payload",
    "depends_on",
    "queue",
    "priority",
    "retry",
    "timeout",
    "trigger",
    "when",
    "map",
    "wait",
}
DEFINITION_FIELDS = {"nodes", "description", "params", "timeout", "concurrency", "concurrency_key"}
FIELDS_IN_WORDS = ", ".join(sorted(DEFINITION_FIELDS))
RETRY_FIELDS = {"max_attempts", "backoff", "base", "max"}
# A template: `{{` and one of the five roots (sql/schema/25_templates.sql has the grammar).
TEMPLATE = re.compile(r"\{\{\s*(?:params|nodes|item|index|run)\b[^{}]*\}\}")


def _as_rendered(value: Any) -> tuple[Any, bool]:
    """`value` with each template inside a longer string replaced by a plain word,
    as a run will render it (so that `https://x/{{ params.day }}` is checked as the
    URL it becomes), and whether some string is one whole template: its value may
    be of any type, so only the worker can check the rendered payload."""
    if isinstance(value, str):
        if TEMPLATE.fullmatch(value.strip()) and value.strip() == value:
            return value, True
        return TEMPLATE.sub("param", value), False
    if isinstance(value, dict):
        pairs = [(k, *_as_rendered(v)) for k, v in value.items()]
        return {k: v for k, v, _ in pairs}, any(w for _, _, w in pairs)
    if isinstance(value, list):
        items = [_as_rendered(v) for v in value]
        return [v for v, _ in items], any(w for _, w in items)
    return value, False


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
    """The node's task and payload, from `task` + `payload` or a kind key (`http: {...}`);
    a `wait` node has neither."""
    kinds = [k for k in node if k in BUILTIN_PAYLOADS and k not in NODE_FIELDS]
    if "wait" in node:
        extra = [k for k in ("task", *kinds, "payload") if k in node]
        if extra:
            return None, None, [(f"{loc}.{extra[0]}", "a wait node runs no task")]
        return WAIT_TASK, {}, []
    if "task" in node:
        if kinds:
            return None, None, [(f"{loc}.{kinds[0]}", "give either task or a task kind, not both")]
        if node["task"] == WAIT_TASK:
            return None, None, [(f"{loc}.task", "is reserved: write `wait: {...}` instead")]
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
        found = [] if task == WAIT_TASK else catalog.task_problems(task, f"{loc}.task")
        found = found or json_problems(payload, payload_loc, level=PAYLOAD_LEVEL)
        if not found and task != WAIT_TASK:
            rendered, any_value = _as_rendered(payload)
            if not any_value:
                found = payload_problems(task, rendered, payload_loc)
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
    _dataflow_fields(node, loc, out, problems)
    return out if len(problems) == before else None


def _dataflow_fields(node: dict, loc: str, out: dict, problems: Problems) -> None:
    """`trigger`, `when`, `map` and `wait` into `out` (only when given, so a plain
    node's normal form is unchanged). Their templates and conditions are checked
    by the database afterwards (dataflow_nodes)."""
    trigger = node.get("trigger", DEFAULT_TRIGGER)
    if trigger not in TRIGGER_RULES:
        problems.append((f"{loc}.trigger", f"must be one of {', '.join(TRIGGER_RULES)}"))
    elif trigger != DEFAULT_TRIGGER:
        out["trigger"] = trigger
    if "when" in node:
        if isinstance(node["when"], str):
            out["when"] = node["when"]
        else:
            problems.append((f"{loc}.when", "must be a SQL/JSON path predicate (a string)"))
    if "map" in node:
        if "wait" in node:
            problems.append((f"{loc}.map", "a wait node cannot map"))
        elif isinstance(node["map"], list | str):
            out["map"] = node["map"]
        else:
            problems.append(
                (
                    f"{loc}.map",
                    'must be a list, or one template that gives a list ("{{ nodes.ID.result }}")',
                )
            )
    if "wait" in node:
        wait = _wait(node["wait"], f"{loc}.wait", problems)
        if wait is not None:
            out["wait"] = wait


def _seconds(value: Any, loc: str, problems: Problems) -> float | None:
    seconds = parse_duration(value)
    if seconds is None or seconds == 0 or seconds > WAIT_SECONDS_MAX:
        problems.append((loc, f"bad duration {value!r} (write 30s, 10m, 24h; at most 10 years)"))
        return None
    return seconds


def _wait(value: Any, loc: str, problems: Problems) -> dict | None:
    """`{for: 10m}` or `{signal: true, timeout: 24h, on_timeout: fail|skip}`, normalised."""
    if not isinstance(value, dict):
        problems.append((loc, "must be {for: DURATION} or {signal: true, timeout: ..., ...}"))
        return None
    before = len(problems)
    for key in value:
        if key not in ("for", "signal", "timeout", "on_timeout"):
            problems.append(
                (f"{loc}.{key}", "unknown field (use for, or signal, timeout, on_timeout)")
            )
    if ("for" in value) == (value.get("signal") is True):
        problems.append(
            (loc, "wait for a duration (`for`) or for a signal (`signal: true`): one of them")
        )
        return None
    if "for" in value:
        for key in ("timeout", "on_timeout"):
            if key in value:
                problems.append((f"{loc}.{key}", "only a signal wait has a timeout"))
        seconds = _seconds(value["for"], f"{loc}.for", problems)
        return {"for": seconds} if len(problems) == before else None
    out: dict[str, Any] = {"signal": True}
    if value.get("timeout") is not None:
        out["timeout"] = _seconds(value["timeout"], f"{loc}.timeout", problems)
    if "on_timeout" in value:
        if value["on_timeout"] not in ("fail", "skip"):
            problems.append((f"{loc}.on_timeout", "must be fail or skip"))
        elif "timeout" not in out:
            problems.append((f"{loc}.on_timeout", "needs a timeout"))
        else:
            out["on_timeout"] = value["on_timeout"]
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


def check(definition: Any, catalog: TaskCatalog, where: str = "") -> dict[str, Any]:
    """The normalised definition: its nodes in topological order, and `params`,
    `timeout` (seconds), `concurrency`, `concurrency_key`, `description` when
    given; or DefinitionError listing every problem of its structure (locations
    prefixed with `where`). `places` holds each node's place in the document,
    for the data-flow check's messages (dataflow_nodes); `stored` drops it."""
    prefix = f"{where}." if where else ""
    if not isinstance(definition, dict):
        raise DefinitionError([(where or "body", "must be an object with `nodes`")])
    problems: Problems = [
        (f"{prefix}{key}", f"unknown field (a definition has {FIELDS_IN_WORDS})")
        for key in definition
        if key not in DEFINITION_FIELDS
    ]
    if "description" in definition and not isinstance(definition["description"], str | None):
        problems.append((f"{prefix}description", "must be a string"))
    top = _top_level(definition, prefix, problems)
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
    places = {node_id: where_is[node_id] for node_id in order}
    for loc, raw in entries:
        kinds = [k for k in raw if k in BUILTIN_PAYLOADS and k not in NODE_FIELDS]
        if kinds and isinstance(raw.get("id"), str):
            places[raw["id"]] = f"{loc}|{kinds[0]}"
    return {**top, "nodes": [nodes[node_id] for node_id in order], "places": places}


def _top_level(definition: dict, prefix: str, problems: Problems) -> dict[str, Any]:
    """params, timeout, concurrency and concurrency_key, normalised."""
    out: dict[str, Any] = {}
    if definition.get("description"):
        out["description"] = definition["description"]
    if "params" in definition:
        params = definition["params"]
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            problems.append((f"{prefix}params", "must be an object of parameter names to values"))
        else:
            found = json_problems(params, f"{prefix}params", level=1)
            problems += found
            if not found and params:
                out["params"] = params
    if definition.get("timeout") is not None:
        seconds = _seconds(definition["timeout"], f"{prefix}timeout", problems)
        if seconds is not None:
            out["timeout"] = seconds
    if definition.get("concurrency") is not None:
        limit = definition["concurrency"]
        if _is_int(limit) and 1 <= limit <= RUN_CONCURRENCY_MAX:
            out["concurrency"] = limit
        else:
            problems.append(
                (f"{prefix}concurrency", f"must be a whole number from 1 to {RUN_CONCURRENCY_MAX}")
            )
    if definition.get("concurrency_key") is not None:
        key = definition["concurrency_key"]
        if "concurrency" not in definition:
            problems.append((f"{prefix}concurrency_key", "needs concurrency"))
        elif not isinstance(key, str) or not key:
            problems.append(
                (f"{prefix}concurrency_key", "must be a string (a template over params)")
            )
        else:
            out["concurrency_key"] = key
    return out


def dataflow_nodes(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The input of sluice.dag_dataflow_problems for a checked definition: each
    node's id, parents, payload, map and condition, and its place in the document."""
    places = definition.get("places", {})
    out = []
    for node in definition["nodes"]:
        place = places.get(node["id"], "")
        entry = {
            "id": node["id"],
            "depends_on": node["depends_on"],
            "payload": node.get("payload", {}),
            "at": place.split("|")[0],
        }
        for key in ("map", "when"):
            if key in node:
                entry[key] = node[key]
        out.append(entry)
    return out


def dataflow_place(at: str, definition: dict[str, Any]) -> str:
    """A place sluice.dag_dataflow_problems reported, as the user wrote it: the
    payload of a node written with a task kind (`http: {...}`) is that field."""
    for place in definition.get("places", {}).values():
        loc, _, kind = place.partition("|")
        if kind and (at == f"{loc}.payload" or at.startswith(f"{loc}.payload.")):
            return f"{loc}.{kind}" + at[len(f"{loc}.payload") :]
    return at


def stored(definition: dict[str, Any]) -> dict[str, Any]:
    """What is stored and run: the checked definition without the places."""
    return {k: v for k, v in definition.items() if k != "places"}


async def check_all(
    conn: AsyncConnection[Any], definition: Any, catalog: TaskCatalog, where: str = ""
) -> dict[str, Any]:
    """`check`, then, on a definition whose structure is sound, the database's
    check of its templates, conditions and maps (one query): the definition to
    store, or DefinitionError with every problem of the first layer that has
    any. (Data-flow answers on a broken graph would be noise, as a cycle check is
    on one with unknown dependencies.)"""
    checked = check(definition, catalog, where)
    prefix = f"{where}." if where else ""
    found = await engine.dag_dataflow_problems(
        conn,
        nodes=dataflow_nodes(checked),
        concurrency_key=checked.get("concurrency_key"),
        key_at=f"{prefix}concurrency_key",
    )
    if found:
        raise DefinitionError([(dataflow_place(p.at, checked), p.problem) for p in found])
    return stored(checked)


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
