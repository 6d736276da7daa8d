"""`http`: one request, `{"method": "POST", "url": "...", "headers": {}, "json": {},
"expect": [200, 201]}`.

A connection error, a 5xx, a 408 or a 429 fails the attempt (retried with
backoff); any other status outside `expect` (default: any 2xx) fails the job at
once, since sending the same request again would get the same answer.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from sluice.worker.context import JobContext, NonRetryableError
from sluice.worker.handlers.payload import field, require_object
from sluice.worker.registry import task

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
RETRYABLE_STATUSES = {408, 425, 429}
# How much of a response body the job's result keeps.
BODY_LIMIT = 65536


class HttpError(Exception):
    """A retryable failure: the server could not be reached or answered 5xx/408/429."""


def safe_url(url: str) -> str:
    """`url` without user:password, for error messages (they land in the job row)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_url(task_name: str, url: Any) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise NonRetryableError(f"{task_name}: payload.url must be an http(s) URL")
    return url


async def send(
    client: httpx.AsyncClient,
    task_name: str,
    method: str,
    url: str,
    expect: list[int] | None,
    **kwargs: Any,
) -> httpx.Response:
    """Send the request and classify the answer: return it when expected, raise
    HttpError (retry) or NonRetryableError (give up) otherwise."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.InvalidURL as exc:
        raise NonRetryableError(f"{task_name}: invalid URL: {exc}") from None
    except httpx.TransportError as exc:
        raise HttpError(f"{method} {safe_url(url)}: {type(exc).__name__}: {exc}") from None
    status = response.status_code
    if (expect is None and 200 <= status < 300) or (expect is not None and status in expect):
        return response
    message = f"{method} {safe_url(url)} answered {status}"
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise HttpError(message)
    raise NonRetryableError(message)


def _decode_body(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            return response.json()
        except ValueError:
            pass
    text = response.text
    return text if len(text) <= BODY_LIMIT else text[:BODY_LIMIT]


@task(name="http")
async def http(payload: Any, ctx: JobContext) -> dict[str, Any]:
    payload = require_object("http", payload)
    method = field("http", payload, "method", str, "GET").upper()
    if method not in METHODS:
        raise NonRetryableError(f"http: payload.method must be one of {', '.join(sorted(METHODS))}")
    url = check_url("http", payload.get("url"))
    headers = field("http", payload, "headers", dict, {})
    expect = field("http", payload, "expect", list, None)
    if expect is not None and not all(
        isinstance(s, int) and not isinstance(s, bool) for s in expect
    ):
        raise NonRetryableError("http: payload.expect must be a list of status codes")
    kwargs: dict[str, Any] = {"headers": {str(k): str(v) for k, v in headers.items()}}
    if "json" in payload:
        kwargs["content"] = json.dumps(payload["json"])
        kwargs["headers"].setdefault("Content-Type", "application/json")
    elif "body" in payload:
        kwargs["content"] = str(field("http", payload, "body", str))
    if "params" in payload:
        kwargs["params"] = field("http", payload, "params", dict)
    if "timeout" in payload:
        kwargs["timeout"] = float(field("http", payload, "timeout", (int, float)))
    response = await send(ctx.http, "http", method, url, expect, **kwargs)
    return {"status": response.status_code, "body": _decode_body(response)}
