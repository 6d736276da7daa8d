"""Handlers for the worker tests (loaded through SLUICE_TASK_MODULES).

Handlers that need to tell the test something write it to the database the
test reads (the `test_events` table when a test created it) or return it as
their result.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import threading
import time
from typing import Any

from sluice import JobContext, NonRetryableError, task


@task
async def echo(payload: Any, ctx: JobContext) -> dict[str, Any]:
    return {
        "payload": payload,
        "job_id": ctx.job_id,
        "attempt": ctx.attempt,
        "pid": os.getpid(),
        "worker": ctx.worker_id,
    }


@task
def sync_echo(payload: Any) -> dict[str, Any]:
    return {"payload": payload, "thread": threading.current_thread().name}


@task
async def always_fails(payload: Any) -> None:
    raise RuntimeError("this handler always fails")


@task
async def not_retryable(payload: Any) -> None:
    raise NonRetryableError("bad input, do not retry")


@task
async def hang(payload: Any) -> None:
    await asyncio.sleep(3600)


@task
def sync_hang(payload: Any, ctx: JobContext) -> str:
    # Cooperative: returns once the worker signals it to stop.
    ctx.cancelled.wait(60)
    return "stopped"


def released(payload: Any) -> bool:
    """Whether the file payload.release names exists (the test created it)."""
    release = payload.get("release")
    return release is not None and os.path.exists(release)


async def hold(payload: Any, seconds: float) -> None:
    """Sleep `seconds`; or, when payload.release names a file, until the test
    creates it (at most `seconds`): a test that needs a handler still running
    at some later point holds it until then instead of guessing how long that
    takes on a loaded machine."""
    end = time.monotonic() + seconds
    step = 0.01 if "release" in payload else seconds
    while (left := end - time.monotonic()) > 0:
        if released(payload):
            return
        await asyncio.sleep(min(step, left))


def hold_sync(payload: Any, seconds: float) -> None:
    """hold() in a handler's thread."""
    end = time.monotonic() + seconds
    step = 0.01 if "release" in payload else seconds
    while (left := end - time.monotonic()) > 0 and not released(payload):
        time.sleep(min(step, left))


@task
async def slow(payload: Any, ctx: JobContext) -> dict[str, Any]:
    await hold(payload, float(payload.get("seconds", 1)))
    return {"pid": os.getpid(), "worker": ctx.worker_id}


@task
async def flaky(payload: Any, ctx: JobContext) -> dict[str, Any]:
    """Fails with probability payload.p (each attempt), else succeeds."""
    await asyncio.sleep(random.random() * 0.005)
    if random.random() < float(payload.get("p", 0.3)):
        raise RuntimeError("random failure")
    return {"attempt": ctx.attempt}


@task
async def with_progress(payload: Any, ctx: JobContext) -> bool:
    ok = await ctx.progress({"done": 1, "of": 2})
    await asyncio.sleep(float(payload.get("hold", 0)))
    return ok


@task
async def stall_first_attempt(payload: Any, ctx: JobContext) -> dict[str, Any]:
    """Hangs on its first attempt (so its worker can be killed mid-job), then succeeds."""
    if ctx.attempt == 1:
        await asyncio.sleep(3600)
    return {"worker": ctx.worker_id, "attempt": ctx.attempt}


@task
async def odd_result(payload: Any) -> Any:
    """A result PostgreSQL refuses (NUL), or one JSON cannot carry (NaN)."""
    return "a\x00b" if payload.get("kind") == "nul" else float("nan")


@task
async def shout(payload: Any, ctx: JobContext) -> None:
    ctx.output = "binary\x00output"


def record(path: str, ctx: JobContext, event: str) -> None:
    """Append `<job> <attempt> <event> <monotonic time>` to the file at `path`
    (CLOCK_MONOTONIC is one clock for every process of the machine)."""
    with open(path, "a") as f:
        f.write(f"{ctx.job_id} {ctx.attempt} {event} {time.monotonic()!r}\n")


@task
async def overlap_probe(payload: Any, ctx: JobContext) -> dict[str, Any]:
    """Records when each attempt starts and ends (payload.file); attempt 1 lasts
    payload.seconds (or until payload.release: hold), later ones a moment."""
    record(payload["file"], ctx, "start")
    try:
        if ctx.attempt == 1:
            await hold(payload, float(payload["seconds"]))
        else:
            await asyncio.sleep(0.1)
    finally:
        record(payload["file"], ctx, "end")
    return {"attempt": ctx.attempt}


@task
def sync_overlap_probe(payload: Any, ctx: JobContext) -> dict[str, Any]:
    """overlap_probe in a thread, and deaf to its cancel signal: attempt 1 runs
    its payload.seconds (or until payload.release: hold) whatever happens."""
    record(payload["file"], ctx, "start")
    if ctx.attempt == 1:
        hold_sync(payload, float(payload["seconds"]))
    else:
        time.sleep(0.1)
    record(payload["file"], ctx, "end")
    return {"attempt": ctx.attempt}


@task
async def block_loop(payload: Any, ctx: JobContext) -> dict[str, Any]:
    """A blocking call in an async def: the event loop stops for payload.seconds."""
    record(payload["file"], ctx, "start")
    time.sleep(float(payload["seconds"]))  # noqa: ASYNC251 - what this handler is for
    record(payload["file"], ctx, "end")
    return {"attempt": ctx.attempt}


@task
async def timed(payload: Any, ctx: JobContext) -> dict[str, Any]:
    """Records each attempt's start and end (payload.file) and lasts payload.seconds
    (or until payload.release: hold), every attempt: how many times a job ran,
    whatever the database recorded."""
    record(payload["file"], ctx, "start")
    await hold(payload, float(payload["seconds"]))
    record(payload["file"], ctx, "end")
    return {"attempt": ctx.attempt, "worker": ctx.worker_id}


@task
async def loaded_modules(payload: Any) -> dict[str, bool]:
    """Which of the modules named in payload["modules"] this worker process has imported."""
    import sys

    return {name: name in sys.modules for name in payload["modules"]}


# Whether the garbage collector was on while this module, a user's task module
# (SLUICE_TASK_MODULES), loaded.
COLLECTING_AT_IMPORT = gc.isenabled()


@task
async def collector_state(payload: Any) -> dict[str, Any]:
    """The garbage collector as this worker process runs jobs."""
    return {
        "enabled": gc.isenabled(),
        "enabled_at_import": COLLECTING_AT_IMPORT,
        "frozen": gc.get_freeze_count(),
    }
