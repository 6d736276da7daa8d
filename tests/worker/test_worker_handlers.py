"""The built-in handlers, called directly against real local servers (HTTP, SMTP)
and real processes."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from sluice.core import webhooks
from sluice.core.embedded import free_port
from sluice.worker.context import JobContext, NonRetryableError
from sluice.worker.handlers.email import EmailError
from sluice.worker.handlers.http import HttpError
from sluice.worker.handlers.shell import ShellError
from sluice.worker.registry import REGISTRY
from sluice.worker.resources import Resources
from tests.worker.helpers import wait_for, worker_settings

REGISTRY.import_modules(())


def call(task: str, payload: Any, ctx: JobContext) -> Any:
    return REGISTRY.get(task).call(payload, ctx)


@pytest.fixture
async def make_ctx() -> AsyncIterator:
    opened: list[Resources] = []

    def make(**settings: Any) -> JobContext:
        resources = Resources(worker_settings(**settings), None)
        opened.append(resources)
        return JobContext(resources, 7, 1, 3, "default", "t", "default", None, None)

    yield make
    for resources in opened:
        await resources.close()


class Recorder(BaseHTTPRequestHandler):
    """Answers /status/<code>; records every request."""

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
        code = int(self.path.split("/")[2]) if self.path.startswith("/status/") else 200
        body = json.dumps({"ok": code < 400}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
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
    with pytest.raises(NonRetryableError, match=r"payload\.seconds must be int or float"):
        await call("sleep", {"seconds": "soon"}, ctx)


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


async def test_shell_failures(make_ctx):
    ctx = make_ctx(allow_shell=True)
    with pytest.raises(ShellError, match="exit status 3"):
        await call("shell", {"argv": ["sh", "-c", "echo oops >&2; exit 3"]}, ctx)
    assert ctx.output == "--- stderr ---\noops\n"
    with pytest.raises(NonRetryableError, match="cannot run 'no-such-program'"):
        await call("shell", {"argv": ["no-such-program"]}, ctx)
    with pytest.raises(NonRetryableError, match=r"payload\.argv must be a non-empty list"):
        await call("shell", {"argv": []}, ctx)


async def test_shell_cancel_kills_the_process_group(make_ctx, tmp_path: Path):
    ctx = make_ctx(allow_shell=True)
    pidfile = tmp_path / "pid"
    # The child ignores SIGTERM: only the SIGKILL after the grace stops it.
    script = f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 60' & wait"
    task = asyncio.create_task(call("shell", {"argv": ["sh", "-c", script]}, ctx))
    await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "the child")
    child = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


# -- http ------------------------------------------------------------------


async def test_http_sends_the_request_and_returns_the_answer(make_ctx, http_server):
    base, requests = http_server
    result = await call(
        "http",
        {
            "method": "POST",
            "url": f"{base}/hook?x=1",
            "headers": {"X-Token": "t"},
            "json": {"a": 1},
        },
        make_ctx(),
    )
    assert result == {"status": 200, "body": {"ok": True}}
    [req] = requests
    assert (req["method"], req["path"]) == ("POST", "/hook?x=1")
    assert req["headers"]["X-Token"] == "t"
    assert req["headers"]["Content-Type"] == "application/json"
    assert json.loads(req["body"]) == {"a": 1}


async def test_http_status_handling(make_ctx, http_server):
    base, _ = http_server
    ctx = make_ctx()
    assert (await call("http", {"url": f"{base}/status/201", "expect": [201]}, ctx))[
        "status"
    ] == 201
    for retryable in (500, 503, 429):
        with pytest.raises(HttpError, match=f"answered {retryable}"):
            await call("http", {"url": f"{base}/status/{retryable}"}, ctx)
    with pytest.raises(NonRetryableError, match="answered 404"):
        await call("http", {"url": f"{base}/status/404"}, ctx)
    with pytest.raises(NonRetryableError, match="answered 200"):
        await call("http", {"url": f"{base}/status/200", "expect": [201]}, ctx)


async def test_http_unreachable_is_retryable_and_hides_credentials(make_ctx):
    url = f"http://user:hunter2@127.0.0.1:{free_port()}/x"
    with pytest.raises(HttpError) as error:
        await call("http", {"url": url}, make_ctx())
    assert "ConnectError" in str(error.value)
    assert "hunter2" not in str(error.value)


async def test_http_rejects_bad_payloads(make_ctx):
    ctx = make_ctx()
    with pytest.raises(NonRetryableError, match=r"payload\.url must be an http"):
        await call("http", {"url": "file:///etc/passwd"}, ctx)
    with pytest.raises(NonRetryableError, match=r"payload\.method"):
        await call("http", {"url": "http://x", "method": "BREW"}, ctx)


# -- webhook ---------------------------------------------------------------


async def test_webhook_delivers_a_signed_event(make_ctx, http_server):
    base, requests = http_server
    event = {"event": "job.failed", "job_id": 3, "state": "failed"}
    result = await call(
        "webhook", {"url": f"{base}/in", "secret": "s3cret", "event": event}, make_ctx()
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
            "webhook", {"url": f"{base}/status/502", "secret": None, "event": {}}, make_ctx()
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
        await call("email", {"to": ["x@refused.example"]}, make_ctx(smtp_url=url))
    with pytest.raises(EmailError):
        await call(
            "email", {"to": ["a@example.com"]}, make_ctx(smtp_url=f"smtp://127.0.0.1:{free_port()}")
        )
    with pytest.raises(NonRetryableError, match=r"payload\.to"):
        await call("email", {"to": []}, make_ctx(smtp_url=url))
