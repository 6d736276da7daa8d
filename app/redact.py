"""Secrets never leave the API: values under secret-looking keys are masked in
every response (webhook secrets in payloads and `notify`, HTTP authorization
headers, passwords...). Stored data is untouched; workers still read it."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(
    r"(?i)(?:.*[_-])?(?:secret|password|passwd|token|api[_-]?key|apikey|authorization"
    r"|private[_-]?key|credentials?|cookie)"
)


def redact(value: Any) -> Any:
    """A copy of the JSON `value` with every secret-looking key's value masked."""
    if isinstance(value, dict):
        return {
            key: (
                MASK if value[key] is not None and SECRET_KEY.fullmatch(key) else redact(value[key])
            )
            for key in value
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value
