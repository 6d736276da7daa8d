"""The outbound-address policy: `http` and `webhook` tasks cannot be pointed at
loopback, private, link-local or other special-purpose addresses (server-side
request forgery), checked on the address actually connected to."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from sluice.core.outbound import OutboundPolicy, refused_because
from sluice.worker.context import JobContext, NonRetryableError
from sluice.worker.executor import describe_error
from sluice.worker.registry import REGISTRY
from sluice.worker.resources import Resources
from tests.factories import fetch_job, insert_job, rows
from tests.worker.helpers import attempts, claimed, wait_state, worker_settings

REGISTRY.import_modules(())


class Hello(BaseHTTPRequestHandler):
    """200 with a small JSON body; /redirect?to=URL answers 302 to URL. Each
    request is recorded in the server's `asked`."""

    def do_GET(self) -> None:
        self.server.asked.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"hello": "from inside"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving() -> Iterator[ThreadingHTTPServer]:
    """An internal service on 127.0.0.1 (Hello), for the length of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.asked = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def inside() -> Iterator[int]:
    """An internal service on 127.0.0.1: its port."""
    with serving() as server:
        yield server.server_address[1]


@pytest.fixture
async def resources():
    opened: list[Resources] = []

    def make(allow: str = "") -> JobContext:
        res = Resources(worker_settings(outbound_allow=OutboundPolicy.parse(allow)), None)
        opened.append(res)
        return JobContext(res, claimed())

    yield make
    for res in opened:
        await res.close()


def payload_for(task: str, url: str) -> dict[str, Any]:
    if task == "http":
        return {"url": url}
    return {"url": url, "secret": "s", "event": {"event": "job.succeeded"}}


async def refusal(task: str, url: str, ctx: JobContext) -> str:
    with pytest.raises(NonRetryableError) as refused:
        await REGISTRY.get(task).call(payload_for(task, url), ctx)
    return describe_error(refused.value)


class FakeDns:
    """Names that resolve where a test says (DNS an attacker controls); every lookup
    is recorded."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.lookups: list[str] = []


@pytest.fixture
def fake_dns(monkeypatch) -> FakeDns:
    dns = FakeDns()
    real = anyio.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> Any:
        dns.lookups.append(host)
        if host not in dns.answers:
            return await real(host, port, **kwargs)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in dns.answers[host]
        ]

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    return dns


# -- the tasks refuse special addresses, whatever the task ---------------------


@pytest.mark.parametrize("task", ["http", "webhook"])
@pytest.mark.parametrize(
    ("host", "shown", "kind"),
    [
        ("127.0.0.1", "127.0.0.1", "loopback"),
        ("[::1]", "[::1]", "loopback"),
        ("169.254.169.254", "169.254.169.254", "link-local, cloud metadata"),
        ("10.0.0.1", "10.0.0.1", "private"),
        ("[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "loopback: IPv4 127.0.0.1 inside IPv6"),
        ("[fd00::1]", "[fd00::1]", "unique-local"),
        ("0.0.0.0", "0.0.0.0", "unspecified, this network"),  # noqa: S104 - a target
        ("2130706433", "2130706433 = 127.0.0.1", "loopback"),  # 127.0.0.1 as one number
    ],
)
async def test_special_addresses_fail_the_job_at_once(resources, inside, task, host, shown, kind):
    error = await refusal(task, f"http://{host}:{inside}/x?token=abc", resources())
    method = "GET" if task == "http" else "POST"
    assert error == (
        f"{task}: {method} http://{host}:{inside}/x: refused to connect to {shown} ({kind}): "
        "outbound requests reach public addresses only, unless SLUICE_OUTBOUND_ALLOW allows "
        f"the host or its network (for example SLUICE_OUTBOUND_ALLOW={shown.split(' ')[0]}"
        f":{inside})"
    )


@pytest.mark.parametrize("task", ["http", "webhook"])
async def test_a_name_that_resolves_to_a_private_address_is_refused(
    resources, inside, fake_dns, task
):
    error = await refusal(task, f"http://localhost:{inside}/", resources())
    assert "refused to connect to localhost = " in error and "(loopback)" in error
    fake_dns.answers["metadata.attacker.example"] = ["169.254.169.254"]
    error = await refusal(task, "http://metadata.attacker.example/latest/", resources())
    assert "refused to connect to metadata.attacker.example = 169.254.169.254" in error
    # Every answer is checked, and only an allowed one is connected to.
    fake_dns.answers["mixed.example"] = ["10.0.0.7", "fd00::7"]
    assert "= 10.0.0.7 (private)" in await refusal(task, "http://mixed.example/", resources())
    fake_dns.answers["mixed.example"] = ["10.0.0.7", "127.0.0.1"]
    ctx = resources(f"127.0.0.1:{inside}")
    url = f"http://mixed.example:{inside}/"
    assert (await REGISTRY.get(task).call(payload_for(task, url), ctx))["status"] == 200


@pytest.mark.parametrize("task", ["http", "webhook"])
async def test_the_address_checked_is_the_address_connected_to(resources, inside, fake_dns, task):
    """The backend resolves once, checks, and connects to what it checked: a name
    allowed by the setting reaches the address it resolved to, and there is no second
    lookup for a DNS answer to change in (rebinding)."""
    fake_dns.answers["internal.example"] = ["127.0.0.1"]
    ctx = resources("internal.example")
    url = f"http://internal.example:{inside}/"
    result = await REGISTRY.get(task).call(payload_for(task, url), ctx)
    assert result["status"] == 200
    assert fake_dns.lookups == ["internal.example"]
    # The name is allowed, not the address behind it: a literal 127.0.0.1 is still refused.
    assert "(loopback)" in await refusal(task, f"http://127.0.0.1:{inside}/", ctx)


async def test_a_redirect_to_a_private_address_is_refused(resources, inside):
    ctx = resources(f"127.0.0.1:{inside}")
    url = f"http://127.0.0.1:{inside}/redirect?to=http://10.0.0.1/admin"
    with pytest.raises(NonRetryableError) as refused:
        await REGISTRY.get("http").call({"url": url, "follow_redirects": True}, ctx)
    error = describe_error(refused.value)
    assert error.startswith(f"http: GET http://127.0.0.1:{inside}/redirect: ")
    assert "refused to connect to 10.0.0.1 (private)" in error
    # Back to the internal service itself: the port is allowed, so this one goes.
    back = f"http://127.0.0.1:{inside}/redirect?to=http://127.0.0.1:{inside}/ok"
    result = await REGISTRY.get("http").call({"url": back, "follow_redirects": True}, ctx)
    assert result == {"status": 200, "body": {"hello": "from inside"}}


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    """Another internal service on 127.0.0.1; `asked` holds the requests it got."""
    with serving() as server:
        yield server


async def test_a_webhook_follows_no_redirect_to_a_private_address_or_any(
    resources, inside, recorder
):
    """A notify URL on an allowed host that redirects elsewhere: the delivery is
    not followed there (a private address, or even another allowed service); it
    gives up on the 3xx at once, saying so."""
    elsewhere = f"127.0.0.1:{recorder.server_address[1]}"
    ctx = resources(f"127.0.0.1:{inside}, {elsewhere}")
    for to in ("http://10.0.0.1/admin", "http://169.254.169.254/latest/", f"http://{elsewhere}/"):
        url = f"http://127.0.0.1:{inside}/redirect?to={to}"
        error = await refusal("webhook", url, ctx)
        assert error.startswith(f"webhook: POST http://127.0.0.1:{inside}/redirect answered 302")
    assert recorder.asked == []
    # The allowed service is reached when the delivery goes to it directly.
    assert await REGISTRY.get("webhook").call(payload_for("webhook", f"http://{elsewhere}/"), ctx)
    assert recorder.asked == ["POST /"]


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8", "localhost", "PORT"])
@pytest.mark.parametrize("task", ["http", "webhook"])
async def test_an_allowed_host_works(resources, inside, task, allow):
    allow = f"127.0.0.1:{inside}" if allow == "PORT" else allow
    host = "localhost" if allow == "localhost" else "127.0.0.1"
    ctx = resources(f"hooks.example, {allow}")
    result = await REGISTRY.get(task).call(payload_for(task, f"http://{host}:{inside}/"), ctx)
    assert result["status"] == 200
    # Only what is allowed: another port, or the metadata address, still refused.
    if allow.endswith(f":{inside}"):
        assert "(loopback)" in await refusal(task, f"http://127.0.0.1:{inside + 1}/", ctx)
    assert "(link-local" in await refusal(task, "http://169.254.169.254/", ctx)


async def test_environment_proxies_are_not_used(resources, inside, monkeypatch):
    """Through a proxy the worker would connect to the proxy, and the policy could
    not see the real destination: proxies from the environment are ignored."""
    monkeypatch.setenv("HTTP_PROXY", "http://203.0.113.7:3128")
    monkeypatch.setenv("ALL_PROXY", "http://203.0.113.7:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    ctx = resources(f"127.0.0.1:{inside}")
    result = await REGISTRY.get("http").call({"url": f"http://127.0.0.1:{inside}/"}, ctx)
    assert result["status"] == 200  # straight there, not through 203.0.113.7


# -- through a worker: the job fails at once, with the reason in the job row -----


@pytest.mark.parametrize("task", ["http", "webhook"])
async def test_a_refused_job_fails_at_once_and_says_why(db, start_worker, task):
    await start_worker()
    job_id = await insert_job(
        db,
        task,
        payload=payload_for(task, "http://169.254.169.254/latest/meta-data/"),
        max_attempts=5,
    )
    await wait_state(db, job_id, "failed")
    job = await fetch_job(db, job_id)
    assert job["attempt"] == 1 and job["reason"] == "non_retryable"
    assert "169.254.169.254 (link-local, cloud metadata)" in job["last_error"]
    assert "SLUICE_OUTBOUND_ALLOW" in job["last_error"]
    [(_, outcome, error, *_)] = await attempts(db, job_id)
    assert (outcome, error) == ("failed", job["last_error"])
    [letter] = await rows(
        db, "SELECT reason, last_error FROM sluice.dead_letters WHERE job_id = %s", job_id
    )
    assert letter == {"reason": "non_retryable", "last_error": job["last_error"]}


async def test_an_allowed_internal_service_is_reached_by_a_worker(db, start_worker, inside):
    await start_worker(outbound_allow=OutboundPolicy.parse(f"127.0.0.1:{inside}"))
    job_id = await insert_job(db, "http", payload={"url": f"http://127.0.0.1:{inside}/"})
    await wait_state(db, job_id, "succeeded")
    assert (await fetch_job(db, job_id))["result"] == {
        "status": 200,
        "body": {"hello": "from inside"},
    }


# -- the policy itself ------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
        ("2002:808:808::1", None),  # 6to4 of 8.8.8.8
        ("127.0.0.53", "loopback"),
        ("10.255.0.1", "private"),
        ("172.31.255.255", "private"),
        ("172.32.0.1", None),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared, carrier-grade NAT"),
        ("169.254.169.254", "link-local, cloud metadata"),
        ("224.0.0.251", "multicast"),
        ("255.255.255.255", "reserved, broadcast"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private: IPv4 10.0.0.1 inside IPv6"),
        ("64:ff9b::a9fe:a9fe", "link-local, cloud metadata: IPv4 169.254.169.254 inside IPv6"),
        ("2002:7f00:1::1", "loopback: IPv4 127.0.0.1 inside IPv6"),  # 6to4
        ("::127.0.0.1", "IPv4-compatible, deprecated"),
    ],
)
def test_what_is_refused_by_default(address, why):
    assert refused_because(ipaddress.ip_address(address)) == why


def test_the_setting_reads_names_addresses_networks_and_ports():
    policy = OutboundPolicy.parse(
        " api.internal, *.svc.cluster.local ,10.1.0.0/16, 127.0.0.1:8000, [::1]:9000, fd00::/8,"
    )
    allowed = [
        ("api.internal", 443, "10.0.0.5"),
        ("API.Internal.", 80, "192.168.0.1"),  # names compare without case or final dot
        ("db.svc.cluster.local", 5432, "10.96.0.10"),
        ("anything", 80, "10.1.200.3"),
        ("anything", 80, "::ffff:10.1.0.1"),
        ("localhost", 8000, "127.0.0.1"),
        ("localhost", 9000, "::1"),
        ("x", 1, "fd12::1"),
    ]
    refused = [
        ("api.internal.evil.example", 80, "10.0.0.5"),
        ("svc.cluster.local", 80, "10.96.0.10"),  # `*.` means below the domain
        ("evilsvc.cluster.local", 80, "10.96.0.10"),
        ("anything", 80, "10.2.0.1"),
        ("localhost", 8001, "127.0.0.1"),
        ("localhost", 8000, "::1"),
    ]
    for host, port, address in allowed:
        policy.check(host, port, ipaddress.ip_address(address))
    for host, port, address in refused:
        with pytest.raises(Exception, match="refused to connect"):
            policy.check(host, port, ipaddress.ip_address(address))
    # Public addresses need no entry.
    OutboundPolicy().check("example.com", 443, ipaddress.ip_address("93.184.216.34"))


@pytest.mark.parametrize("bad", ["http://x", "a b", "host:http", "[::1", "10.0.0.0/33:80", "*"])
def test_a_bad_setting_is_refused_at_start(bad):
    from sluice.core.config import SettingsError, load
    from sluice.worker.settings import WorkerSettings

    with pytest.raises(SettingsError, match="SLUICE_OUTBOUND_ALLOW"):
        load(WorkerSettings, environ={"SLUICE_OUTBOUND_ALLOW": bad})
