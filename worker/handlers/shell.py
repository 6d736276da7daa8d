"""`shell`: runs `{"argv": [...], "env": {...}, "cwd": null}` without a shell.

Off unless SLUICE_ALLOW_SHELL=1: whoever may submit jobs could run anything.
The command gets its own process group, so a timeout or a cancel stops the
whole tree it started (SIGTERM, then SIGKILL after a short grace), and leftover
children are killed when it exits. The last SLUICE_OUTPUT_TAIL bytes of stdout
and of stderr go to the attempt log. The worker's SLUICE_* variables (the
database URL, secrets) are not passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from sluice.worker.context import JobContext, NonRetryableError
from sluice.worker.handlers.payload import field, require_object, string_list
from sluice.worker.registry import task

# How long a process group gets to exit after SIGTERM before SIGKILL.
KILL_GRACE = 2.0
# After the command exits, how long to wait for its pipes to drain.
DRAIN_TIMEOUT = 1.0


class ShellError(Exception):
    """The command exited with a non-zero status (retryable)."""


class _Tail:
    """The last `limit` bytes read from a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    async def read_all(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.data += chunk
            excess = len(self.data) - self.limit
            if excess > 0:
                del self.data[:excess]
                self.dropped += excess

    def text(self) -> str:
        text = self.data.decode(errors="replace")
        return f"[{self.dropped} bytes before this]\n{text}" if self.dropped else text


def _environment(extra: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    for key, value in extra.items():
        if not isinstance(value, str):
            raise NonRetryableError(f"shell: payload.env.{key} must be a string")
        env[key] = value
    return env


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited after the grace."""
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_GRACE)
    _kill_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _format_output(stdout: _Tail, stderr: _Tail) -> str | None:
    parts = []
    if stdout.data or stdout.dropped:
        parts.append("--- stdout ---\n" + stdout.text())
    if stderr.data or stderr.dropped:
        parts.append("--- stderr ---\n" + stderr.text())
    return "\n".join(parts) or None


@task(name="shell")
async def shell(payload: Any, ctx: JobContext) -> dict[str, int]:
    if not ctx.settings.allow_shell:
        raise NonRetryableError(
            "shell tasks are disabled on this worker (set SLUICE_ALLOW_SHELL=1)"
        )
    payload = require_object("shell", payload)
    argv = string_list("shell", payload, "argv")
    env = _environment(field("shell", payload, "env", dict, {}))
    cwd = field("shell", payload, "cwd", str, None)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, killed as a whole
        )
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise NonRetryableError(f"shell: cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    stdout, stderr = _Tail(ctx.settings.output_tail), _Tail(ctx.settings.output_tail)
    assert proc.stdout is not None and proc.stderr is not None
    readers = asyncio.gather(stdout.read_all(proc.stdout), stderr.read_all(proc.stderr))
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        await asyncio.shield(_stop(proc))
        raise
    finally:
        # Children it left behind would hold the pipes open and outlive the job.
        _kill_group(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(readers), DRAIN_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            readers.cancel()
        ctx.output = _format_output(stdout, stderr)
    if code != 0:
        raise ShellError(f"killed by signal {-code}" if code < 0 else f"exit status {code}")
    return {"exit_code": code}
