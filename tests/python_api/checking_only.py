"""Tasks whose annotations name types imported only for type checkers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sluice

if TYPE_CHECKING:
    from decimal import Decimal

    from sluice import JobContext


@sluice.task(name="tc.one")
def one(a: int, price: Decimal, ctx: JobContext) -> int:
    return a


@sluice.task(name="tc.two")
def two(payload: dict, ctx: JobContext) -> int:
    return 1
