"""API request latency (sluice_api_request_seconds), by method, route template
(`/api/v1/jobs/{job_id:int}`, never the raw path, so ids do not explode the
label set) and status."""

from __future__ import annotations

import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from sluice.core.metrics import API_REQUEST_SECONDS


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            API_REQUEST_SECONDS.labels(
                method=scope["method"],
                route=scope.get("path_template") or "unmatched",
                status=str(status),
            ).observe(time.perf_counter() - started)
