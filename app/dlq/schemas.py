"""Response bodies of the DLQ API (an entry is sluice.core.engine.DeadLetter)."""

from __future__ import annotations

from msgspec import Struct


class DeadLetterSize(Struct):
    """How many dead letters wait for an operator."""

    size: int
