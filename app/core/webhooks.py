"""Webhook signatures: how Sluice signs a delivery and how a receiver checks it.

A delivery carries `X-Sluice-Timestamp: <unix seconds>` and
`X-Sluice-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the secret>`.
Signing the timestamp with the body lets a receiver refuse replays of old deliveries.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Sluice-Timestamp"
SIGNATURE_HEADER = "X-Sluice-Signature"
# How old a delivery may be, by its timestamp, and still verify.
DEFAULT_TOLERANCE = 300


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign(secret: str, timestamp: int, body: str | bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    message = str(timestamp).encode() + b"." + _as_bytes(body)
    return "sha256=" + hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str | None, body: str | bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Headers for a delivery of `body`: the timestamp, and the signature when there is a secret."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {TIMESTAMP_HEADER: str(timestamp)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    return headers


def verify(
    secret: str,
    timestamp: str | int,
    body: str | bytes,
    signature: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when `signature` is this secret's for `body` at `timestamp`, and the
    timestamp is within `tolerance` seconds of `now`."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)
