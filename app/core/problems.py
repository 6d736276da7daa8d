"""Problems with input: (field path, message) pairs, and how msgspec's validation
messages become them.

The API answers them as `{"field": ..., "message": ...}` errors; the worker puts
them in a failed job's error. Both read msgspec's messages the same way, here.
"""

from __future__ import annotations

import re

import msgspec

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
