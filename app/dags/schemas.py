"""Request bodies of the DAGs API (a stored DAG is sluice.core.engine.Dag)."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct


class DagDefinitionIn(Struct):
    """A DAG definition (JSON, or YAML with Content-Type application/yaml; docs/dags.md).

    Nodes: `id`, `task` and `payload` (or a task kind with its payload: `http: {url: ...}`),
    `depends_on` (node ids), `queue`, `priority`, `retry` (`{max_attempts, backoff, base,
    max}` or a number of attempts) and `timeout` (`30s`, `5m`, `1h`); for data flow,
    `trigger` (all_success, all_done, one_success, one_failed, none_failed), `when` (a
    SQL/JSON path predicate over `$.nodes.ID.result`, `$.params`), `map` (a list, or a
    template giving one: one job per element, `{{ item }}`, `{{ index }}`) and `wait`
    (`{for: 10m}` or `{signal: true, timeout: 24h, on_timeout: fail|skip}`, instead of a
    task). Payload strings may hold templates: `{{ params.X }}`, `{{ nodes.ID.result.a }}`.
    Nodes may also be a mapping from id to node.
    """

    nodes: Annotated[Any, Meta(description="A list of nodes, or a mapping of id to node.")]
    description: str | None = None
    params: Annotated[
        Any, Meta(description="Default values of `{{ params.X }}`; a run's params override them.")
    ] = None
    timeout: Annotated[
        Any, Meta(description="A run's deadline (`2h`): what is left then is cancelled.")
    ] = None
    concurrency: Annotated[
        Any, Meta(description="At most this many runs of the DAG at once; others wait queued.")
    ] = None
    concurrency_key: Annotated[
        Any, Meta(description="Counted per value of this template over params (`{{ params.x }}`).")
    ] = None
