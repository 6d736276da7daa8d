"""`shell`: runs `{"argv": [...], "env": {...}, "cwd": null}` without a shell (every
field: sluice.core.tasks.ShellPayload).

Off unless SLUICE_ALLOW_SHELL=1: whoever may submit jobs could run anything.
The command gets its own process group, so a timeout or a cancel stops the
whole tree it started (SIGTERM, then SIGKILL to what is left after a short
grace), and leftover children are killed when it exits; the attempt ends only
once no process of the group is left. The last SLUICE_OUTPUT_TAIL bytes of
stdout and of stderr go to the attempt log; a non-zero exit fails the attempt
with its status and the end of stderr. The worker's SLUICE_* variables (the
database URL, secrets) are not passed on.

The result is `{"exit_code": 0}`, or with `"result": "last_line"` the last
non-empty line of stdout (a string), or with `"last_line_json"` that line parsed
as JSON: a command hands data to the nodes after it by printing it last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from typing import Any

from sluice.core.tasks import RESULT_LIMIT, ShellPayload
from sluice.worker.context import JobContext, TaskError
from sluice.worker.handlers.common import FinalTaskError, head, payload_of, storable, tail
from sluice.worker.registry import task

log = logging.getLogger("sluice.worker")

# How long a process group gets to exit after SIGTERM before SIGKILL.
KILL_GRACE = 2.0
# After SIGKILL, how long to wait for the group's processes to be gone. SIGKILL
# cannot be ignored, but a process dies only when the kernel next runs it (and
# not while it is in uninterruptible sleep): under load that takes a while.
GONE_TIMEOUT = 10.0
# After the command exits, how long to wait for its pipes to drain.
DRAIN_TIMEOUT = 1.0
# How often to look whether the command exited while its pipes are still open.
EXIT_POLL = 0.05


class ShellError(TaskError):
    """The command exited with a non-zero status (retryable)."""


class _Tail:
    """The last `limit` bytes read from a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess

    def text(self) -> str:
        text = storable(self.data.decode(errors="replace"))
        return f"[{self.dropped} bytes before this]\n{text}" if self.dropped else text


class _LastLine:
    """The last non-blank line of a stream, kept whole up to `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._current = bytearray()
        self._current_too_long = False
        #: The last non-blank line seen (None: none yet), and whether it was too long.
        self.line: bytes | None = None
        self.too_long = False

    def feed(self, chunk: bytes) -> None:
        first, *rest = chunk.split(b"\n")
        self._grow(first)
        for part in rest:
            self._end_line()
            self._grow(part)

    def _grow(self, part: bytes) -> None:
        if self._current_too_long or not part:
            return
        if len(self._current) + len(part) > self.limit:
            self._current_too_long = True
            self._current.clear()
        else:
            self._current += part

    def _end_line(self) -> None:
        if self._current_too_long or self._current.strip():
            self.line, self.too_long = bytes(self._current), self._current_too_long
        self._current.clear()
        self._current_too_long = False

    def finish(self) -> None:
        self._end_line()


async def _read(stream: asyncio.StreamReader, *sinks: _Tail | _LastLine) -> None:
    while chunk := await stream.read(65536):
        for sink in sinks:
            sink.feed(chunk)


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(extra)
    return env


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies, which wait only to be
    reaped by their parent, do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.scandir("/proc")
    except OSError:
        return True  # no /proc: the group exists, count it as running
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
                    fields = stat.read().rpartition(b")")[2].split()
            except OSError:
                continue  # it ended while we looked
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
    return False


async def _until_gone(pgid: int, within: float) -> bool:
    """Wait until no process of group `pgid` runs, at most `within` seconds."""
    deadline = time.monotonic() + within
    delay = 0.005
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


async def _kill(pgid: int) -> None:
    """SIGKILL the group and wait until it is gone (bounded: a process stuck in the
    kernel cannot be waited for forever)."""
    _kill_group(pgid, signal.SIGKILL)
    if not await _until_gone(pgid, GONE_TIMEOUT):
        log.warning("shell: processes of group %s still run %gs after SIGKILL", pgid, GONE_TIMEOUT)


async def _stop(pgid: int) -> None:
    """SIGTERM the process group; SIGKILL what is left of it after the grace."""
    _kill_group(pgid, signal.SIGTERM)
    await _until_gone(pgid, KILL_GRACE)
    await _kill(pgid)


async def _stop_starting(starting: asyncio.Future[asyncio.subprocess.Process]) -> None:
    """Stop a command cancelled while it was starting. asyncio would kill only its
    first process, then wait for every holder of its pipes: let it start, then stop
    the whole group."""
    try:
        proc = await starting
    except OSError:
        return
    await _stop(proc.pid)


async def _exit_status(proc: asyncio.subprocess.Process) -> int:
    """The command's exit status as soon as it exits. Process.wait() returns only
    once its pipes are closed too, which a child left running in the background
    can hold open for as long as it likes."""
    waiting = asyncio.ensure_future(proc.wait())
    try:
        while proc.returncode is None:
            await asyncio.wait({waiting}, timeout=EXIT_POLL)
        return proc.returncode
    finally:
        waiting.cancel()


def _format_output(stdout: _Tail, stderr: _Tail) -> str | None:
    parts = []
    if stdout.data or stdout.dropped:
        parts.append("--- stdout ---\n" + stdout.text())
    if stderr.data or stderr.dropped:
        parts.append("--- stderr ---\n" + stderr.text())
    return "\n".join(parts) or None


def _failure(program: str, code: int, stdout: _Tail, stderr: _Tail) -> ShellError:
    """Why the command failed, in its own words: the exit status and the end of stderr
    (of stdout when stderr is empty)."""
    if code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        message = f"shell: {program} was killed by signal {-code}{name}"
    else:
        message = f"shell: {program} exited with status {code}"
    for name, stream in (("stderr", stderr), ("stdout", stdout)):
        if said := tail(stream.data.decode(errors="replace")):
            return ShellError(f"{message}; {name}: {said}")
    return ShellError(message)


def _result(kind: str, program: str, last: _LastLine) -> Any:
    if last.too_long:
        raise FinalTaskError(
            f"shell: the last line of {program}'s stdout is over {last.limit} bytes "
            f'(the most "result": "{kind}" keeps)'
        )
    if last.line is None:
        raise FinalTaskError(f'shell: "result": "{kind}" but {program} printed no line')
    line = last.line.decode(errors="replace").strip()
    if kind == "last_line":
        return storable(line)
    try:
        return storable(json.loads(line))
    except (ValueError, RecursionError) as exc:
        raise FinalTaskError(
            f"shell: the last line of {program}'s stdout is not JSON ({exc}): {head(line, 200)}"
        ) from None


@task(name="shell")
async def shell(payload: Any, ctx: JobContext) -> Any:
    if not ctx.settings.allow_shell:
        raise FinalTaskError(
            "shell: shell tasks are disabled on this worker (set SLUICE_ALLOW_SHELL=1)"
        )
    command = payload_of("shell", payload, ShellPayload)
    program = command.argv[0]
    starting = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *command.argv,
            env=_environment(command.env),
            cwd=command.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, killed as a whole
        )
    )
    try:
        proc = await asyncio.shield(starting)
    except asyncio.CancelledError:
        await asyncio.shield(_stop_starting(starting))
        raise
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise FinalTaskError(f"shell: cannot run {program!r}: {exc.strerror or exc}") from None
    stdout, stderr = _Tail(ctx.settings.output_tail), _Tail(ctx.settings.output_tail)
    last = _LastLine(RESULT_LIMIT)
    sinks = (stdout, last) if command.result != "exit_code" else (stdout,)
    assert proc.stdout is not None and proc.stderr is not None
    readers = asyncio.gather(_read(proc.stdout, *sinks), _read(proc.stderr, stderr))
    try:
        code = await _exit_status(proc)
    except asyncio.CancelledError:
        await asyncio.shield(_stop(proc.pid))
        raise
    finally:
        # Children it left behind would hold the pipes open and outlive the job.
        await asyncio.shield(_kill(proc.pid))
        try:
            await asyncio.wait_for(asyncio.shield(readers), DRAIN_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            readers.cancel()
        ctx.output = _format_output(stdout, stderr)
    if code != 0:
        raise _failure(program, code, stdout, stderr)
    if command.result == "exit_code":
        return {"exit_code": code}
    last.finish()
    return _result(command.result, program, last)
