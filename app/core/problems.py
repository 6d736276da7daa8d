"""Problems with input, as (field, message) pairs: what validation collects so
that every problem is reported at once, each at its place in the request
(`jobs[3].payload.url`, `definition.nodes[2].depends_on[0]`)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from sluice.core.jobs import MAX_JSON_DEPTH

Problems = list[tuple[str, str]]

# "Expected `int`, got `str` - at `$.jobs[0].priority`": the problem, then its path.
_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)
# msgspec names the field of these problems in the message, not the path.
_NAMED = re.compile(r"^Object (contains unknown|missing required) field `([^`]*)`$")


def named_field(message: str) -> tuple[str, str] | None:
    """(field, problem) when a msgspec message names its field in the text (an
    unknown or a missing field) rather than in its path; None otherwise."""
    if named := _NAMED.match(message):
        problem = "unknown field" if named.group(1) == "contains unknown" else "is required"
        return named.group(2), problem
    return None


def validation_problem(exc: msgspec.ValidationError, where: str) -> tuple[str, str]:
    """The (field, message) of a msgspec validation error, its path under `where`
    (`payload` + `$.seconds` -> `payload.seconds`)."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    message, path = match.group(1), match.group(2) or ""
    if named := named_field(message):
        field, message = named
        path = f"{path}.{field}"
    return where + path, message


def json_problems(value: Any, where: str, level: int = 0) -> Problems:
    """What PostgreSQL or Sluice's readers cannot take in the JSON `value`: strings
    or keys holding NUL characters (jsonb cannot store them), and values more than
    MAX_JSON_DEPTH levels below the top of the stored document (`value` itself sits
    `level` levels below it: a DAG node's payload is stored 3 levels down)."""
    found: Problems = []
    too_deep = False
    stack: list[tuple[Any, str, int]] = [(value, where, level)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append((path, "must not contain NUL characters"))
        elif isinstance(item, dict | list) and item:
            if depth >= MAX_JSON_DEPTH:  # its items would sit deeper than the limit
                too_deep = True
                continue
            if isinstance(item, dict):
                for key, child in item.items():
                    if "\x00" in key:
                        found.append((path, "keys must not contain NUL characters"))
                    stack.append((child, f"{path}.{key}", depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
    if too_deep:
        found.append((where, f"is nested deeper than {MAX_JSON_DEPTH - level} levels"))
    return found
