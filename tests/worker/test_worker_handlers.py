"""The built-in handlers, called directly against real local servers (HTTP, SMTP)
and real processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from sluice.core import webhooks
from sluice.core.embedded import free_port
from sluice.core.outbound import OutboundPolicy
from sluice.worker.context import JobContext, NonRetryableError
from sluice.worker.executor import describe_error
from sluice.worker.handlers import shell as shell_module
from sluice.worker.handlers.email import EmailError
from sluice.worker.handlers.http import HttpError
from sluice.worker.handlers.shell import ShellError
from sluice.worker.registry import REGISTRY
from sluice.worker.resources import Resources
from tests.factories import fetch_job, insert_job, rows
from tests.worker.helpers import (
    attempts,
    claimed,
    process_gone,
    wait_for,
    wait_state,
    worker_settings,
)

REGISTRY.import_modules(())
# The test servers listen on 127.0.0.1, which the outbound policy refuses unless allowed.
LOCAL = OutboundPolicy.parse("127.0.0.1")


def call(task: str, payload: Any, ctx: JobContext) -> Any:
    return REGISTRY.get(task).call(payload, ctx)


@pytest.fixture
async def make_ctx() -> AsyncIterator:
    opened: list[Resources] = []

    def make(**settings: Any) -> JobContext:
        resources = Resources(worker_settings(**settings), None)
        opened.append(resources)
        return JobContext(resources, claimed())

    yield make
    for resources in opened:
        await resources.close()


class Recorder(BaseHTTPRequestHandler):
    """Answers /status/<code> (JSON), /text/<n> (n bytes of text), /redirect?to=<url>
    and anything else with 200; records every request."""

    requests: list[dict[str, Any]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length),
            }
        )
        code, kind, body = 200, "application/json", b""
        if self.path.startswith("/status/"):
            code = int(self.path.split("/")[2].split("?")[0])
            body = json.dumps({"ok": code < 400, "why": f"status {code}"}).encode()
        elif self.path.startswith("/text/"):
            kind, body = "text/plain; charset=utf-8", b"x" * int(self.path.split("/")[2])
        elif self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            body = json.dumps({"ok": True}).encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Handler", (Recorder,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


# -- noop, sleep -----------------------------------------------------------


async def test_noop_and_sleep(make_ctx):
    ctx = make_ctx()
    assert await call("noop", {"anything": 1}, ctx) is None
    assert await call("sleep", {"seconds": 0.01}, ctx) is None
    with pytest.raises(NonRetryableError, match=r"^sleep: payload\.seconds: Expected `float`"):
        await call("sleep", {"seconds": "soon"}, ctx)
    with pytest.raises(NonRetryableError, match=r"^sleep: payload\.seconds: is required"):
        await call("sleep", {}, ctx)


# -- shell -----------------------------------------------------------------


async def test_shell_is_off_unless_allowed(make_ctx):
    with pytest.raises(NonRetryableError, match="SLUICE_ALLOW_SHELL=1"):
        await call("shell", {"argv": ["true"]}, make_ctx())


async def test_shell_runs_argv_without_a_shell_and_keeps_output_tails(make_ctx):
    ctx = make_ctx(allow_shell=True, output_tail=8)
    result = await call("shell", {"argv": ["printf", "%s", "$HOME 0123456789"]}, ctx)
    assert result == {"exit_code": 0}
    # No shell: $HOME is printed as written; only the last 8 bytes are kept.
    assert ctx.output == "--- stdout ---\n[8 bytes before this]\n23456789"


async def test_shell_env_and_cwd_without_the_workers_secrets(make_ctx, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SLUICE_DATABASE_URL", "postgresql://u:secret@db/x")
    ctx = make_ctx(allow_shell=True)
    await call(
        "shell",
        {
            "argv": ["sh", "-c", "pwd; echo $GREETING; echo ${SLUICE_DATABASE_URL:-none}"],
            "env": {"GREETING": "hello"},
            "cwd": str(tmp_path),
        },
        ctx,
    )
    assert ctx.output == f"--- stdout ---\n{tmp_path}\nhello\nnone\n"


async def test_shell_failures_say_the_exit_status_and_the_end_of_stderr(make_ctx):
    ctx = make_ctx(allow_shell=True)
    script = "echo progress; for i in $(seq 1 400); do echo line $i >&2; done; exit 3"
    with pytest.raises(ShellError) as failed:
        await call("shell", {"argv": ["sh", "-c", script]}, ctx)
    error = describe_error(failed.value)
    assert error.startswith("shell: sh exited with status 3; stderr: …")
    assert error.endswith("line 399\nline 400")  # the end, where the reason usually is
    assert "shell.py" not in error and "ShellError" not in error  # none of Sluice's own
    assert len(error) < 1100
    assert ctx.output.startswith("--- stdout ---\nprogress\n\n--- stderr ---\nline 1\n")
    # No stderr: the end of stdout says what happened.
    with pytest.raises(ShellError) as failed:
        await call("shell", {"argv": ["sh", "-c", "echo no such day; exit 1"]}, ctx)
    assert describe_error(failed.value) == "shell: sh exited with status 1; stdout: no such day"
    with pytest.raises(ShellError) as failed:
        await call("shell", {"argv": ["sh", "-c", "kill -KILL $$"]}, ctx)
    assert describe_error(failed.value) == "shell: sh was killed by signal 9 (SIGKILL)"
    with pytest.raises(NonRetryableError) as refused:
        await call("shell", {"argv": ["no-such-program"]}, ctx)
    assert describe_error(refused.value) == (
        "shell: cannot run 'no-such-program': No such file or directory"
    )
    with pytest.raises(NonRetryableError, match=r"^shell: payload\.argv: Expected `array` of"):
        await call("shell", {"argv": []}, ctx)
    with pytest.raises(NonRetryableError, match=r"^shell: payload\.argv: Expected `array`"):
        await call("shell", {"argv": "ls"}, ctx)  # one declaration: a list, never a string


async def test_shell_output_with_nul_bytes_is_storable(make_ctx):
    ctx = make_ctx(allow_shell=True)
    with pytest.raises(ShellError) as failed:
        await call("shell", {"argv": ["sh", "-c", "printf 'a\\0b' >&2; exit 2"]}, ctx)
    assert "\x00" not in str(failed.value) and "\x00" not in ctx.output
    assert str(failed.value).endswith("stderr: a\ufffdb")


@pytest.mark.parametrize(
    ("kind", "script", "result"),
    [
        ("last_line", "echo starting; echo '  done: 3 files  '; echo; echo '   '", "done: 3 files"),
        ("last_line_json", 'echo working; echo \'{"rows": 3, "path": "/tmp/x"}\'', None),
        ("last_line_json", "printf '[1, 2]'", [1, 2]),  # no final newline
        ("exit_code", "echo 5", {"exit_code": 0}),
    ],
)
async def test_shell_results(make_ctx, kind, script, result):
    ctx = make_ctx(allow_shell=True, output_tail=16)
    got = await call("shell", {"argv": ["sh", "-c", script], "result": kind}, ctx)
    assert got == (result if result is not None else {"rows": 3, "path": "/tmp/x"})


async def test_shell_results_that_cannot_be_had_fail_the_job(make_ctx, monkeypatch):
    ctx = make_ctx(allow_shell=True)

    async def run(script: str, kind: str = "last_line_json") -> str:
        with pytest.raises(NonRetryableError) as failed:
            await call("shell", {"argv": ["sh", "-c", script], "result": kind}, ctx)
        return describe_error(failed.value)

    assert (await run("echo extracted 25 orders")).startswith(
        "shell: the last line of sh's stdout is not JSON (Expecting value: line 1 column 1 "
        "(char 0)): extracted 25 orders"
    )
    assert await run("true", "last_line") == 'shell: "result": "last_line" but sh printed no line'
    monkeypatch.setattr(shell_module, "RESULT_LIMIT", 100)
    too_long = await run("head -c 500 /dev/zero | tr '\\0' x; echo")
    assert too_long == (
        "shell: the last line of sh's stdout is over 100 bytes "
        '(the most "result": "last_line_json" keeps)'
    )
    # A long line before the last one does not matter.
    got = await call(
        "shell",
        {
            "argv": ["sh", "-c", "head -c 500 /dev/zero | tr '\\0' x; echo; echo 7"],
            "result": "last_line_json",
        },
        ctx,
    )
    assert got == 7
    with pytest.raises(NonRetryableError, match=r"^shell: payload\.result: Invalid enum value"):
        await call("shell", {"argv": ["true"], "result": "stdout"}, ctx)


async def start_stubborn_child(ctx: JobContext, pidfile: Path) -> tuple[asyncio.Task, int]:
    """A shell task whose child ignores SIGTERM (only the SIGKILL after the grace
    stops it), running: the task and the child's pid."""
    script = f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 60' & wait"
    task = asyncio.create_task(call("shell", {"argv": ["sh", "-c", script]}, ctx))
    pid = await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the child")
    return task, int(pid)


async def test_shell_cancel_kills_the_process_group(make_ctx, tmp_path: Path):
    task, child = await start_stubborn_child(make_ctx(allow_shell=True), tmp_path / "pid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The attempt ended only once the whole group was gone: nothing left to wait for.
    assert process_gone(child)


async def test_shell_waits_for_a_killed_group_to_be_gone(make_ctx, tmp_path: Path, monkeypatch):
    """SIGKILL is not instant: a killed process closes its files (its pipes reach EOF)
    before it dies, and dies when the kernel next runs it, later on a loaded machine.
    The task waits (bounded) until no process of its group runs, so a cancelled or
    timed-out attempt leaves nothing behind."""
    task, child = await start_stubborn_child(make_ctx(allow_shell=True), tmp_path / "pid")
    # Stand in for a slow death: the group looks alive for the first polls after the kill.
    seen: list[bool] = []
    real = shell_module._group_alive

    def slow(pgid: int) -> bool:
        seen.append(real(pgid))
        return len(seen) <= 5 or seen[-1]

    monkeypatch.setattr(shell_module, "_group_alive", slow)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(seen) > 5 and process_gone(child)


async def test_a_cancel_while_the_command_starts_stops_its_whole_group(
    make_ctx, tmp_path: Path, monkeypatch
):
    """asyncio, cancelled inside create_subprocess_exec, kills the first process only
    (and then waits for its pipes): the group is stopped once it has started."""
    ctx = make_ctx(allow_shell=True)
    pidfile = tmp_path / "pid"
    release = asyncio.Event()
    start = asyncio.create_subprocess_exec

    async def slow_start(*args: Any, **kwargs: Any) -> Any:
        proc = await start(*args, **kwargs)
        await release.wait()  # still connecting its pipes, on a loaded machine
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_start)
    script = f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 60' & wait"
    task = asyncio.create_task(call("shell", {"argv": ["sh", "-c", script]}, ctx))
    await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the child")
    task.cancel()
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert process_gone(int(pidfile.read_text()))


async def test_a_child_left_behind_does_not_hold_the_job(make_ctx, tmp_path: Path):
    """The command exits; a child it started in the background still holds its
    stdout. The job ends with the command, and the child is killed."""
    ctx = make_ctx(allow_shell=True)
    pidfile = tmp_path / "pid"
    script = (
        f"sh -c 'echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 60' & "
        f"while [ ! -e {pidfile} ]; do sleep 0.01; done; echo started"
    )
    result = await asyncio.wait_for(call("shell", {"argv": ["sh", "-c", script]}, ctx), 20)
    assert result == {"exit_code": 0}
    assert process_gone(int(pidfile.read_text()))
    assert ctx.output == "--- stdout ---\nstarted\n"


# -- http ------------------------------------------------------------------


async def test_http_sends_the_request_and_returns_the_answer(make_ctx, http_server):
    base, requests = http_server
    result = await call(
        "http",
        {
            "method": "POST",
            "url": f"{base}/hook?x=1",
            "params": {"page": 2, "all": True},
            "headers": {"X-Token": "t"},
            "json": {"a": 1},
        },
        make_ctx(outbound_allow=LOCAL),
    )
    assert result == {"status": 200, "body": {"ok": True}}
    [req] = requests
    assert (req["method"], req["path"]) == ("POST", "/hook?x=1&page=2&all=true")
    assert req["headers"]["X-Token"] == "t"
    assert req["headers"]["Content-Type"] == "application/json"
    assert json.loads(req["body"]) == {"a": 1}


async def test_http_sends_a_text_body(make_ctx, http_server):
    base, requests = http_server
    payload = {"method": "PUT", "url": f"{base}/x", "body": "a=1&b=2", "result": "status"}
    payload["headers"] = {"content-type": "application/x-www-form-urlencoded"}
    assert await call("http", payload, make_ctx(outbound_allow=LOCAL)) == {"status": 200}
    [req] = requests
    assert req["body"] == b"a=1&b=2"
    assert req["headers"]["content-type"] == "application/x-www-form-urlencoded"


async def test_http_keeps_the_body_as_json_or_text_within_the_limit(make_ctx, http_server):
    base, _ = http_server
    ctx = make_ctx(outbound_allow=LOCAL)
    assert await call("http", {"url": f"{base}/text/5"}, ctx) == {"status": 200, "body": "xxxxx"}
    assert await call("http", {"url": f"{base}/text/5", "max_body": 5}, ctx) == {
        "status": 200,
        "body": "xxxxx",
    }
    with pytest.raises(NonRetryableError) as failed:
        await call("http", {"url": f"{base}/text/6", "max_body": 5}, ctx)
    assert describe_error(failed.value) == (
        f"http: GET {base}/text/6 answered 200 with a body over 5 bytes "
        '(payload.max_body; "result": "status" keeps no body)'
    )
    # Past the default limit (1 MiB) too, unless no body is kept.
    big = f"{base}/text/{1024 * 1024 + 1}"
    with pytest.raises(NonRetryableError, match="with a body over 1048576 bytes"):
        await call("http", {"url": big}, ctx)
    assert await call("http", {"url": big, "result": "status"}, ctx) == {"status": 200}


async def test_http_errors_say_the_status_and_the_start_of_the_body(make_ctx, http_server):
    base, _ = http_server
    ctx = make_ctx(outbound_allow=LOCAL)
    assert (await call("http", {"url": f"{base}/status/201", "expect": [201]}, ctx))[
        "status"
    ] == 201
    for retryable in (500, 503, 429):
        with pytest.raises(HttpError, match=f"answered {retryable}"):
            await call("http", {"url": f"{base}/status/{retryable}"}, ctx)
    with pytest.raises(NonRetryableError) as failed:
        await call("http", {"url": f"{base}/status/404?token=secret"}, ctx)
    assert describe_error(failed.value) == (
        f'http: GET {base}/status/404 answered 404 Not Found: {{"ok": false, "why": "status 404"}}'
    )
    with pytest.raises(NonRetryableError, match="answered 200 OK"):
        await call("http", {"url": f"{base}/status/200", "expect": [201]}, ctx)
    with pytest.raises(HttpError) as failed:
        await call("http", {"url": f"{base}/status/503", "method": "POST", "json": {}}, ctx)
    assert describe_error(failed.value).startswith(
        f"http: POST {base}/status/503 answered 503 Service Unavailable: "
    )


async def test_http_redirects_are_followed_only_when_asked(make_ctx, http_server):
    base, requests = http_server
    ctx = make_ctx(outbound_allow=LOCAL)
    url = f"{base}/redirect?to={base}/status/201"
    with pytest.raises(NonRetryableError, match="answered 302 Found"):
        await call("http", {"url": url}, ctx)
    assert await call(
        "http", {"url": url, "follow_redirects": True, "expect": [201], "result": "status"}, ctx
    ) == {"status": 201}
    assert [r["path"] for r in requests][-1] == "/status/201"


async def test_http_unreachable_is_retryable_and_hides_credentials(make_ctx):
    url = f"http://user:hunter2@127.0.0.1:{free_port()}/x"
    with pytest.raises(HttpError) as error:
        await call("http", {"url": url}, make_ctx(outbound_allow=LOCAL))
    assert "ConnectError" in str(error.value)
    assert "hunter2" not in str(error.value)


async def test_http_rejects_bad_payloads(make_ctx):
    ctx = make_ctx()
    with pytest.raises(NonRetryableError, match=r"^http: payload\.url: Expected `str` matching"):
        await call("http", {"url": "file:///etc/passwd"}, ctx)
    with pytest.raises(NonRetryableError, match=r"^http: payload\.method: Invalid enum value"):
        await call("http", {"url": "http://x", "method": "BREW"}, ctx)
    with pytest.raises(NonRetryableError, match=r"^http: payload\.body: give json or body"):
        await call("http", {"url": "http://x", "json": {}, "body": "x"}, ctx)
    with pytest.raises(NonRetryableError, match=r"^http: payload\.surprise: unknown field"):
        await call("http", {"url": "http://x", "surprise": 1}, ctx)
    with pytest.raises(NonRetryableError, match=r"^http: payload: Expected `object`"):
        await call("http", ["http://x"], ctx)


# -- webhook ---------------------------------------------------------------


async def test_webhook_delivers_a_signed_event(make_ctx, http_server):
    base, requests = http_server
    event = {"event": "job.failed", "job_id": 3, "state": "failed"}
    result = await call(
        "webhook",
        {"url": f"{base}/in", "secret": "s3cret", "event": event},
        make_ctx(outbound_allow=LOCAL),
    )
    assert result == {"status": 200}
    [req] = requests
    headers = req["headers"]
    assert json.loads(req["body"]) == event
    assert headers["X-Sluice-Event"] == "job.failed"
    assert webhooks.verify(
        "s3cret", headers["X-Sluice-Timestamp"], req["body"], headers["X-Sluice-Signature"]
    )
    assert not webhooks.verify(
        "other", headers["X-Sluice-Timestamp"], req["body"], headers["X-Sluice-Signature"]
    )


async def test_webhook_server_errors_are_retried(make_ctx, http_server):
    base, _ = http_server
    with pytest.raises(HttpError, match="answered 502"):
        await call(
            "webhook",
            {"url": f"{base}/status/502", "secret": None, "event": {}},
            make_ctx(outbound_allow=LOCAL),
        )


def test_signatures():
    body = '{"a":1}'
    sig = webhooks.sign("k", 1700000000, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert webhooks.verify("k", "1700000000", body, sig, now=1700000100)
    assert not webhooks.verify("k", "1700000000", body + " ", sig, now=1700000100)
    assert not webhooks.verify("k", "1700000000", body, sig, now=1700000000 + 301)  # too old
    assert not webhooks.verify("k", "not-a-time", body, sig)
    headers = webhooks.signed_headers(None, body, 5)
    assert headers == {"X-Sluice-Timestamp": "5"}


# -- email -----------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield f"smtp://127.0.0.1:{controller.port}", inbox
    controller.stop()


async def test_email_is_sent_through_smtp(make_ctx, smtp_server):
    url, inbox = smtp_server
    ctx = make_ctx(smtp_url=url, smtp_from="sluice@example.com")
    result = await call(
        "email", {"to": ["ops@example.com"], "subject": "job 3 failed", "body": "details"}, ctx
    )
    assert result == {"to": ["ops@example.com"]}
    [message] = inbox.messages
    assert message.mail_from == "sluice@example.com"
    assert message.rcpt_tos == ["ops@example.com"]
    text = message.content.decode()
    assert "Subject: job 3 failed" in text and "details" in text


async def test_email_failures(make_ctx, smtp_server):
    url, _ = smtp_server
    with pytest.raises(NonRetryableError, match="SLUICE_SMTP_URL"):
        await call("email", {"to": ["a@example.com"]}, make_ctx())
    with pytest.raises(NonRetryableError, match="recipients refused"):
        await call("email", {"to": ["x@refused.example"], "subject": "s"}, make_ctx(smtp_url=url))
    with pytest.raises(EmailError):
        await call(
            "email",
            {"to": ["a@example.com"], "subject": "s"},
            make_ctx(smtp_url=f"smtp://127.0.0.1:{free_port()}"),
        )
    with pytest.raises(NonRetryableError, match=r"^email: payload\.to: Expected `array` of"):
        await call("email", {"to": [], "subject": "s"}, make_ctx(smtp_url=url))
    with pytest.raises(NonRetryableError, match=r"^email: payload\.to: Expected `array`"):
        await call("email", {"to": "a@example.com", "subject": "s"}, make_ctx(smtp_url=url))
    with pytest.raises(NonRetryableError, match=r"^email: payload\.subject: Expected `str`"):
        await call(
            "email", {"to": ["a@example.com"], "subject": "a\nBcc: x@y"}, make_ctx(smtp_url=url)
        )


# -- through a worker: what lands in the job row, the attempt log and the DLQ --


async def test_a_failed_shell_job_shows_its_exit_status_and_stderr_everywhere(db, start_worker):
    await start_worker(allow_shell=True)
    script = "echo 'reading orders'; echo 'orders.csv: no such file' >&2; exit 2"
    job_id = await insert_job(
        db,
        "shell",
        payload={"argv": ["sh", "-c", script]},
        max_attempts=2,
        backoff_base=dt.timedelta(0),
    )
    await wait_state(db, job_id, "failed", within=20)
    expected = "shell: sh exited with status 2; stderr: orders.csv: no such file"
    job = await fetch_job(db, job_id)
    assert (job["last_error"], job["reason"]) == (expected, "attempts_exhausted")
    assert [(a[1], a[2]) for a in await attempts(db, job_id)] == [("failed", expected)] * 2
    [letter] = await rows(
        db, "SELECT last_error, errors FROM sluice.dead_letters WHERE job_id = %s", job_id
    )
    assert letter["last_error"] == expected
    assert [e["error"] for e in letter["errors"]] == [expected, expected]


async def test_a_failed_http_job_shows_the_status_and_the_body(db, start_worker, http_server):
    base, _ = http_server
    await start_worker(outbound_allow=LOCAL)
    job_id = await insert_job(db, "http", payload={"url": f"{base}/status/409", "method": "POST"})
    await wait_state(db, job_id, "failed")
    expected = (
        f'http: POST {base}/status/409 answered 409 Conflict: {{"ok": false, "why": "status 409"}}'
    )
    job = await fetch_job(db, job_id)
    assert (job["last_error"], job["reason"], job["attempt"]) == (expected, "non_retryable", 1)
    assert await rows(
        db, "SELECT last_error FROM sluice.dead_letters WHERE job_id = %s", job_id
    ) == [{"last_error": expected}]


async def test_built_in_results_are_the_jobs_results(db, start_worker, http_server):
    base, _ = http_server
    await start_worker(allow_shell=True, outbound_allow=LOCAL)
    command = "import json; print('working'); print(json.dumps({'rows': 3, 'files': ['a', 'b']}))"
    shell_job = await insert_job(
        db,
        "shell",
        payload={"argv": ["python3", "-c", command], "result": "last_line_json"},
    )
    http_job = await insert_job(db, "http", payload={"url": f"{base}/hello"})
    for job_id in (shell_job, http_job):
        await wait_state(db, job_id, "succeeded", within=20)
    assert (await fetch_job(db, shell_job))["result"] == {"rows": 3, "files": ["a", "b"]}
    assert (await fetch_job(db, http_job))["result"] == {"status": 200, "body": {"ok": True}}
