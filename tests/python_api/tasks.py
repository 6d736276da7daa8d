"""Typed tasks for the Python API tests (loaded by the workers of these tests)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from typing import Any

import msgspec

import sluice
from sluice import JobContext, NonRetryableError


class Point(msgspec.Struct):
    x: float
    y: float


@dataclasses.dataclass
class Box:
    low: Point
    high: Point
    label: str = "box"


class Summary(msgspec.Struct):
    area: float
    label: str
    at: datetime
    job_id: int


@sluice.task(name="py.add", queue="math", max_attempts=3)
def add(a: int, b: int = 0) -> int:
    return a + b


@sluice.task(name="py.measure")
async def measure(box: Box, at: datetime, ctx: JobContext) -> Summary:
    width = box.high.x - box.low.x
    height = box.high.y - box.low.y
    return Summary(area=width * height, label=box.label, at=at, job_id=ctx.job_id)


@sluice.task(name="py.legacy")
def legacy(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"got": payload, "attempt": ctx.attempt}


@sluice.task(name="py.fail", max_attempts=1)
async def fail(reason: str) -> None:
    raise NonRetryableError(reason)


@sluice.task(name="py.hold")
async def hold(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "held"


@sluice.task(name="py.extra")
def extra(a: int, **rest: Any) -> dict[str, Any]:
    return {"a": a, "rest": rest}
