"""The HTTP client of outbound requests (http tasks, webhooks): httpx over a
network backend that connects only where the outbound policy allows
(sluice.core.outbound says what it allows, and why the check is made here, on
the address actually connected to)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpx

from sluice.core.outbound import IPAddress, OutboundPolicy, OutboundRefused


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving host names itself and connecting only
    to addresses the policy allows."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._backend = httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int, within: float | None) -> list[IPAddress]:
        try:
            with anyio.fail_after(within):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        # An IPv6 link-local answer may carry a scope ("fe80::1%eth0"): drop it to judge it.
        found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        return list(dict.fromkeys(found))

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        allowed: list[IPAddress] = []
        refusal: OutboundRefused | None = None
        for address in addresses:
            try:
                self._policy.check(host, port, address)
            except OutboundRefused as exc:
                refusal = refusal or exc
            else:
                allowed.append(address)
        if not allowed:
            assert refusal is not None  # getaddrinfo answers at least one address
            raise refusal
        error: Exception | None = None
        for address in allowed:
            try:
                return await self._backend.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound requests do not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded backend."""

    def __init__(self, policy: OutboundPolicy, limits: httpx.Limits) -> None:
        # Certificates: the system's or SSL_CERT_FILE / SSL_CERT_DIR, as httpx reads them.
        ssl_context = httpx.create_ssl_context(trust_env=True)
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        # httpx's transport takes no network backend: give it a pool that has ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


MAX_REDIRECTS = 5


def outbound_client(policy: OutboundPolicy, user_agent: str = "sluice-worker") -> httpx.AsyncClient:
    """An HTTP client whose every connection the policy checked (no environment proxies)."""
    return httpx.AsyncClient(
        transport=GuardedTransport(
            policy, httpx.Limits(max_connections=100, max_keepalive_connections=20)
        ),
        trust_env=False,
        # Jobs bound their own time (the job timeout); this only stops a silent
        # server from holding a connection forever.
        timeout=httpx.Timeout(60.0, connect=10.0),
        follow_redirects=False,
        max_redirects=MAX_REDIRECTS,
        headers={"User-Agent": user_agent},
    )
