"""Request bodies: JSON for every route, and YAML as well for DAG definitions and runs.

Every route reads its body through JsonRequest (the app's request class): a
body nested so deeply that decoding it would exhaust Python's stack answers 400
naming the problem, and anything shallower is checked field by field against
MAX_JSON_DEPTH where it is stored (sluice.core.problems.json_problems).

Routers that accept YAML set `request_class=YamlRequest`: a body sent as
`application/yaml` (or `application/x-yaml`, `text/yaml`) is parsed with
PyYAML's safe loader and validated exactly like JSON. YAML aliases are
refused: a few lines of nested aliases expand into gigabytes when the value
is later written out as JSON.
"""

from __future__ import annotations

from typing import Any

import yaml
from litestar import Request
from litestar.types import Empty

from sluice.core.jobs import MAX_JSON_DEPTH
from sluice.http.errors import FieldError, Refusal

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


def _too_deep() -> Refusal:
    problem = f"is nested too deeply (more than {MAX_JSON_DEPTH} levels are refused)"
    return Refusal(400, f"The request body {problem}.", [FieldError("body", problem)])


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_yaml(body: bytes) -> Any:
    """The value a YAML document holds; 400 when it is not YAML, uses aliases or is
    nested too deeply to parse."""
    try:
        return yaml.load(body, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise _too_deep() from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise Refusal(400, f"YAML is malformed: {exc}") from None


class JsonRequest(Request):
    """A request whose JSON body cannot exhaust the stack while it is decoded."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise _too_deep() from None


class YamlRequest(JsonRequest):
    """A request whose `json()` also understands a YAML body."""

    async def json(self) -> Any:
        media_type, _ = self.content_type
        if media_type not in YAML_TYPES:
            return await super().json()
        if self._json is Empty:
            self._json = parse_yaml(await self.body())
        return self._json
