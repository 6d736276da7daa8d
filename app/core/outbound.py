"""Where the worker's HTTP requests may go: the outbound-address policy.

Whoever may submit a job names the URL of an `http` task or of a webhook
`notify`, and the worker calls it from inside the network it runs in. Without a
policy that is server-side request forgery: loopback services, the cloud
metadata address 169.254.169.254, the private network. So outbound requests
refuse loopback, private, link-local, unique-local, multicast, unspecified,
shared (CGNAT), documentation, benchmarking and reserved addresses, IPv4 and
IPv6 alike (an IPv4 address embedded in IPv6, as `::ffff:127.0.0.1`, NAT64 or
6to4, is judged as that IPv4 address).

The check is made on the address the worker actually connects to: the network
backend below resolves the host name itself, checks every address, and connects
to a checked address (TLS still verifies the certificate against the URL's host
name). A DNS answer that changes between a check and the connection (DNS
rebinding) therefore cannot get around it, and a redirect is checked like any
other connection because it opens one.

SLUICE_OUTBOUND_ALLOW lets a deployment reach what it needs, comma-separated:
host names (`hooks.internal`, `*.svc.cluster.local`), addresses or networks
(`10.1.0.0/16`, `fd00::/8`), each name or address optionally with a port
(`127.0.0.1:8000`, `[::1]:8000`, `api.internal:443`). `0.0.0.0/0,::/0`
allows everything.

Proxies from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) and ~/.netrc
are not used: through a proxy the worker would connect to the proxy, and the
policy could not see where a request really goes; .netrc would hand the
worker's credentials to whatever host a submitter names. The CA bundle of
SSL_CERT_FILE / SSL_CERT_DIR is still honoured.

The HTTP client that applies the policy is in sluice.core.outbound_http: the
policy alone is what a worker's settings need, without httpx's import time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "SLUICE_OUTBOUND_ALLOW"

# Special-purpose ranges (IANA's IPv4 and IPv6 special-purpose registries, plus
# multicast), and why each is refused. Written out rather than read from
# ipaddress' is_global/is_private, whose answers change between Python versions.
_REFUSED_V4 = [
    ("0.0.0.0/8", "unspecified, this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared, carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, cloud metadata"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, broadcast"),
]
_REFUSED_V6 = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible, deprecated"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing, SRv6"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local, deprecated"),
    ("ff00::/8", "multicast"),
]
REFUSED: list[tuple[IPNetwork, str]] = [
    (ipaddress.ip_network(net), why) for net, why in (*_REFUSED_V4, *_REFUSED_V6)
]
# IPv6 ranges that carry an IPv4 address: judged by that address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_HOST_NAME = re.compile(
    r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def refused_because(address: IPAddress) -> str | None:
    """Why the policy refuses `address` by default (None: a public address)."""
    inner = embedded_ipv4(address)
    if inner is not None:
        why = refused_because(inner)
        return None if why is None else f"{why}: IPv4 {inner} inside IPv6"
    for network, why in REFUSED:
        if address.version == network.version and address in network:
            return why
    return None


def _as_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class OutboundRefused(Exception):
    """The policy refused every address of a request's host."""

    def __init__(self, host: str, port: int, address: IPAddress, reason: str) -> None:
        shown = f"[{address}]" if address.version == 6 else str(address)
        literal = _as_address(host) == address
        target = shown if literal else f"{host} = {shown}"
        example = f"{shown if literal else host}:{port}"
        super().__init__(
            f"refused to connect to {target} ({reason}): outbound requests reach public "
            f"addresses only, unless {SETTING} allows the host or its network "
            f"(for example {SETTING}={example})"
        )
        self.host = host
        self.address = address
        self.reason = reason


@dataclass(frozen=True)
class _Entry:
    """One allowed host name (or `*.domain`) or network, on one port or all."""

    name: str | None
    network: IPNetwork | None
    port: int | None

    def allows(self, host: str, port: int, address: IPAddress) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            inner = embedded_ipv4(address)
            return address in self.network or (inner is not None and inner in self.network)
        assert self.name is not None
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {entry!r}")
    return int(text)


def _entry(text: str) -> _Entry:
    try:
        return _Entry(None, ipaddress.ip_network(text, strict=False), None)
    except ValueError:
        pass
    host, port = text, None
    if text.startswith("["):  # [v6] or [v6]:port
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"cannot read {text!r}")
        host, port = inside, _port(rest[1:], text) if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    try:
        return _Entry(None, ipaddress.ip_network(host), port)
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if not _HOST_NAME.match(name):
        raise ValueError(
            f"{text!r} is neither a host name, an address nor a network "
            "(write api.internal, *.internal, 10.1.0.0/16, 127.0.0.1:8000)"
        )
    return _Entry(name, None, port)


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses outbound requests may reach: public ones, and `allowed`."""

    allowed: tuple[_Entry, ...] = ()

    @classmethod
    def parse(cls, value: str | Iterable[str]) -> OutboundPolicy:
        """The policy allowing the comma-separated entries of SLUICE_OUTBOUND_ALLOW
        (ValueError naming a bad entry)."""
        items = value.split(",") if isinstance(value, str) else value
        return cls(tuple(_entry(item.strip()) for item in items if item.strip()))

    def check(self, host: str, port: int, address: IPAddress) -> None:
        """Raise OutboundRefused unless a request to `host` may connect to `address`."""
        reason = refused_because(address)
        if reason is None:
            return
        name = host.lower().rstrip(".")
        if any(entry.allows(name, port, address) for entry in self.allowed):
            return
        raise OutboundRefused(host, port, address, reason)
