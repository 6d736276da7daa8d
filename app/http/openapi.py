"""OpenAPI helpers: request examples, and the document's configuration."""

from __future__ import annotations

from typing import Any

from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Example
from litestar.params import Body


def example_body(summary: str, value: Any, description: str | None = None, **more: Any) -> Any:
    """A `Body(...)` marker documenting the request body with examples."""
    examples = [Example(summary=summary, value=value)]
    examples += [Example(summary=name.replace("_", " "), value=v) for name, v in more.items()]
    return Body(description=description, examples=examples)


def openapi_config(version: str) -> OpenAPIConfig:
    """The OpenAPI document served at /schema (/schema/openapi.json for machines)."""
    return OpenAPIConfig(
        title="Sluice",
        version=version,
        description=(
            "A job queue and DAG scheduler whose engine is PostgreSQL. Authenticate with "
            "`Authorization: Bearer <JWT>`; errors share one shape (see ErrorBody)."
        ),
        path="/schema",
        create_examples=False,
        use_handler_docstrings=True,
    )
