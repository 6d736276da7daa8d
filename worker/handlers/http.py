"""`http`: one request, `{"method": "POST", "url": "...", "headers": {}, "json": {},
"expect": [200, 201]}` (every field: sluice.core.tasks.HttpPayload).

A connection error, a 5xx, a 408, a 425 or a 429 fails the attempt (retried with
backoff); any other status outside `expect` (default: any 2xx) fails the job at
once, since sending the same request again would get the same answer. Errors
show the status and the start of the response body. Requests go only where the
outbound policy allows (sluice.core.outbound, SLUICE_OUTBOUND_ALLOW); a refused
address fails the job at once.

The result is `{"status": 200, "body": ...}`: the body parsed when the response
is JSON, else text, at most `max_body` bytes (1 MiB by default; a larger body
fails the job rather than being cut), or `{"status": 200}` with
`"result": "status"`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from msgspec import UNSET

from sluice.core.outbound import OutboundRefused
from sluice.core.tasks import HttpPayload
from sluice.worker.context import JobContext, TaskError
from sluice.worker.handlers.common import FinalTaskError, head, payload_of, storable
from sluice.worker.registry import task

if TYPE_CHECKING:
    # Imported by the functions that use it: httpx (with httpcore and anyio) is a
    # quarter of a worker's import time, and most workers never send a request.
    import httpx

RETRYABLE_STATUSES = {408, 425, 429}
# Bytes of an unexpected answer's body read for the error message.
EXCERPT_BYTES = 4096


class HttpError(TaskError):
    """A retryable failure: the server could not be reached or answered 5xx/408/425/429."""


def safe_url(url: str) -> str:
    """`url` without user:password and query, for error messages (they land in the
    job row and may hold tokens)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Answer:
    """What came back: the status, and the body when it was asked for."""

    status: int
    body: Any = UNSET


def _expected(status: int, expect: list[int] | None) -> bool:
    return 200 <= status < 300 if expect is None else status in expect


async def _read(response: httpx.Response, limit: int) -> bytes | None:
    """The (decompressed) body, or None past `limit` bytes: read no further."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _text(response: httpx.Response, data: bytes) -> str:
    try:
        return data.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def _is_json(response: httpx.Response) -> bool:
    kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _body(response: httpx.Response, data: bytes) -> Any:
    """JSON when the response says it is JSON (and is), else text."""
    if _is_json(response):
        try:
            return storable(json.loads(data))
        except (ValueError, RecursionError):
            pass
    return storable(_text(response, data))


def _where(method: str, url: str, response: httpx.Response | None = None) -> str:
    where = f"{method} {safe_url(url)}"
    if response is not None and response.history:
        where += f" (redirected to {safe_url(str(response.url))})"
    return where


async def _unexpected(task_name: str, method: str, url: str, response: httpx.Response) -> Exception:
    """The error for an answer outside `expect`: retryable or not, with a body excerpt."""
    import httpx

    status = response.status_code
    message = f"{task_name}: {_where(method, url, response)} answered {status}"
    if response.reason_phrase:
        message += f" {response.reason_phrase}"
    try:
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) >= EXCERPT_BYTES:
                break
        if excerpt := head(storable(_text(response, bytes(data[:EXCERPT_BYTES])))):
            message += f": {excerpt}"
    except httpx.HTTPError:
        pass  # the status says enough
    if status >= 500 or status in RETRYABLE_STATUSES:
        return HttpError(message)
    return FinalTaskError(message)


async def exchange(
    client: httpx.AsyncClient,
    task_name: str,
    method: str,
    url: str,
    expect: list[int] | None,
    keep_body: int | None,
    params: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Answer:
    """Send the request and classify the answer: an Answer when expected (with its
    body when `keep_body` is a size limit), else HttpError (retry) or FinalTaskError.
    `params` are added to the query of `url`."""
    import httpx

    try:
        target = httpx.URL(url).copy_merge_params(params) if params else url
        async with client.stream(method, target, **kwargs) as response:
            if not _expected(response.status_code, expect):
                raise await _unexpected(task_name, method, url, response)
            if keep_body is None:
                return Answer(response.status_code)
            data = await _read(response, keep_body)
            if data is None:
                raise FinalTaskError(
                    f"{task_name}: {_where(method, url, response)} answered "
                    f"{response.status_code} with a body over {keep_body} bytes "
                    '(payload.max_body; "result": "status" keeps no body)'
                )
            return Answer(response.status_code, _body(response, data))
    except OutboundRefused as exc:
        raise FinalTaskError(f"{task_name}: {_where(method, url)}: {exc}") from None
    except (
        httpx.InvalidURL,
        httpx.UnsupportedProtocol,
        httpx.TooManyRedirects,
        httpx.LocalProtocolError,
    ) as exc:
        raise FinalTaskError(f"{task_name}: {_where(method, url)}: {exc}") from None
    except httpx.HTTPError as exc:
        raise HttpError(
            f"{task_name}: {_where(method, url)}: {type(exc).__name__}: {exc}"
        ) from None


@task(name="http")
async def http(payload: Any, ctx: JobContext) -> dict[str, Any]:
    import httpx

    request = payload_of("http", payload, HttpPayload)
    headers = httpx.Headers(request.headers)
    kwargs: dict[str, Any] = {"follow_redirects": request.follow_redirects}
    if request.json is not UNSET:
        kwargs["content"] = json.dumps(request.json)
        headers.setdefault("Content-Type", "application/json")
    elif request.body is not UNSET:
        kwargs["content"] = request.body
    if request.timeout is not None:
        kwargs["timeout"] = request.timeout
    answer = await exchange(
        ctx.http,
        "http",
        request.method,
        request.url,
        request.expect,
        request.max_body if request.result == "body" else None,
        request.params,
        headers=headers,
        **kwargs,
    )
    if answer.body is UNSET:
        return {"status": answer.status}
    return {"status": answer.status, "body": answer.body}
