"""Request body limits: SLUICE_MAX_BODY_BYTES for every route, and the larger
SLUICE_MAX_BATCH_BODY_BYTES for routes marked `opt={"large_body": True}` (batch
submission, DAG definitions and runs, which may hold thousands of nodes). Past
the limit the answer is 413, checked on Content-Length first and on the bytes
actually received (chunked bodies) as they arrive."""

from __future__ import annotations

from litestar.exceptions import ClientException
from litestar.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, default: int, large: int) -> None:
        self.app = app
        self.default = default
        self.large = large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        limit = (
            self.large if handler is not None and handler.opt.get("large_body") else self.default
        )
        # Raised from receive(), i.e. inside the handler reading the body, so the
        # API's exception handlers answer it like any other error.
        received = next(
            (int(v) for n, v in scope["headers"] if n == b"content-length" and v.isdigit()), 0
        )
        if received <= limit:
            received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> ClientException:
    return ClientException(
        status_code=413, detail=f"The request body is larger than {limit} bytes."
    )
