"""Durations as people write them: `30s`, `5m`, `1h30m`, `250ms`, `2d`, or a number
of seconds. Used by DAG definitions (`timeout: 5m`) and by settings
(`SLUICE_LEASE_TTL=30s`)."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
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


def duration_setting(value: str) -> float:
    """Seconds from an environment variable (`1.5`, `250ms`, `30s`, `5m`, `2h`, `7d`)."""
    text = value.strip()
    seconds = parse_duration(float(text) if _NUMBER.match(text) else text)
    if seconds is None:
        raise ValueError(f"expected a duration such as 30s, 5m, 2h, 7d or seconds, got {value!r}")
    return seconds
