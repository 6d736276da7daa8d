"""Request bodies of the DAGs API (a stored DAG is sluice.core.engine.Dag)."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct


class DagDefinitionIn(Struct):
    """A DAG definition (JSON, or YAML with Content-Type application/yaml).

    Nodes: `id`, `task` and `payload` (or a task kind with its payload: `http: {url: ...}`),
    `depends_on` (node ids), `queue`, `priority`, `retry` (`{max_attempts, backoff, base,
    max}` or a number of attempts) and `timeout` (`30s`, `5m`, `1h`). Nodes may also be a
    mapping from id to node.
    """

    nodes: Annotated[Any, Meta(description="A list of nodes, or a mapping of id to node.")]
    description: str | None = None
