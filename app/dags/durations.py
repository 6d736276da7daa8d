"""Durations as written in DAG definitions: `30s`, `5m`, `1h30m`, `250ms`, `2d`,
or a plain number of seconds."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SECONDS = 10 * 365 * 86400


def parse_duration(value: object) -> float | None:
    """Seconds, or None when `value` is not a duration we understand."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.match(value.strip()):
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(value.strip()))
    else:
        return None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        return None
    return seconds
