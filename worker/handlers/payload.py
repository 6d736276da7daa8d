"""Payload checks shared by the built-in handlers: a bad payload fails the job at
once (retrying cannot fix it), with a message naming the field."""

from __future__ import annotations

from typing import Any

from sluice.worker.context import NonRetryableError


def require_object(task: str, payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise NonRetryableError(f"{task}: the payload must be a JSON object")
    return payload


def field(
    task: str,
    payload: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    default: Any = ...,
) -> Any:
    """payload[name], checked against `kind`; required unless a default is given."""
    if name not in payload or payload[name] is None:
        if default is ...:
            raise NonRetryableError(f"{task}: payload.{name} is required")
        return default
    value = payload[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = " or ".join(k.__name__ for k in _as_tuple(kind))
        raise NonRetryableError(f"{task}: payload.{name} must be {names}")
    return value


def string_list(task: str, payload: dict[str, Any], name: str) -> list[str]:
    value = field(task, payload, name, (list, str))
    items = [value] if isinstance(value, str) else value
    if not items or not all(isinstance(v, str) and v for v in items):
        raise NonRetryableError(f"{task}: payload.{name} must be a non-empty list of strings")
    return items


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
