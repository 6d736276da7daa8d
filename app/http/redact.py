"""Secrets never leave the API: values under secret-looking keys are masked in
every response (webhook secrets in payloads and `notify`, HTTP authorization
headers, passwords...). Stored data is untouched; workers still read it.

JSON shown in a response is also bounded: what SQL stored nested deeper than
MAX_JSON_DEPTH is shown as TOO_DEEP, so no stored value can make a response
fail (or its encoding recurse without end)."""

from __future__ import annotations

import re
from typing import Any

from sluice.core.engine import TOO_DEEP
from sluice.core.jobs import MAX_JSON_DEPTH

MASK = "***"
SECRET_KEY = re.compile(
    r"(?i)(?:.*[_-])?(?:secret|password|passwd|token|api[_-]?key|apikey|authorization"
    r"|private[_-]?key|credentials?|cookie)"
)


def redact(value: Any, *, mask: bool = True, depth: int = 0) -> Any:
    """A copy of the JSON `value` with every secret-looking key's value masked
    (unless `mask` is false) and nesting past MAX_JSON_DEPTH cut off."""
    if isinstance(value, dict | list) and depth >= MAX_JSON_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {
            key: (
                MASK
                if mask and item is not None and SECRET_KEY.fullmatch(key)
                else redact(item, mask=mask, depth=depth + 1)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, mask=mask, depth=depth + 1) for item in value]
    return value
