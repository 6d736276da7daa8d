"""Request bodies in YAML as well as JSON, for DAG definitions and runs.

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
from litestar.exceptions import ClientException
from litestar.types import Empty

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_yaml(body: bytes) -> Any:
    """The value a YAML document holds; 400 when it is not YAML or uses aliases."""
    try:
        return yaml.load(body, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ClientException(f"YAML is malformed: {exc}") from None


class YamlRequest(Request):
    """A request whose `json()` also understands a YAML body."""

    async def json(self) -> Any:
        media_type, _ = self.content_type
        if media_type not in YAML_TYPES:
            return await super().json()
        if self._json is Empty:
            self._json = parse_yaml(await self.body())
        return self._json
