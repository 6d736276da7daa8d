"""What the built-in handlers share: decoding their payloads (sluice.core.tasks),
their errors, and text fit for the job row."""

from __future__ import annotations

from typing import Any, TypeVar

from sluice.core.tasks import Payload, PayloadError, decode
from sluice.worker.context import NonRetryableError, TaskError

P = TypeVar("P", bound=Payload)

# How much of a command's stderr, or of a response body, an error message shows.
EXCERPT = 1000


class FinalTaskError(TaskError, NonRetryableError):
    """A built-in task's failure that retrying cannot fix: the job fails at once."""


def payload_of(task: str, payload: Any, model: type[P]) -> P:
    """The job's payload as `model`; a payload that does not fit fails the job at once
    (retrying cannot fix it), naming the field: `sleep: payload.seconds: ...`."""
    try:
        return decode(payload, model)
    except PayloadError as exc:
        raise FinalTaskError(f"{task}: {exc}") from None


def storable(value: Any) -> Any:
    """`value` with NUL characters, which PostgreSQL's text and jsonb cannot hold,
    replaced by U+FFFD (a response body or command output is not ours to refuse)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def head(text: str, limit: int = EXCERPT) -> str:
    """The start of `text` on one line, at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tail(text: str, limit: int = EXCERPT) -> str:
    """The end of `text` (its last lines matter most), at most `limit` characters."""
    text = storable(text).strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]
