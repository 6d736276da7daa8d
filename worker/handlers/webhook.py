"""`webhook`: delivers a notification, `{"url": ..., "secret": ..., "event": {...}}`.

Sluice enqueues these itself (the notification outbox). The body is the event
as JSON, signed with the secret (see sluice.core.webhooks). Statuses are handled
as by the `http` task: a 2xx delivers, 5xx/408/429/unreachable retry, other
statuses give up. The secret and URL are never logged.
"""

from __future__ import annotations

import json
from typing import Any

from sluice.core.webhooks import signed_headers
from sluice.worker.context import JobContext
from sluice.worker.handlers.http import check_url, send
from sluice.worker.handlers.payload import field, require_object
from sluice.worker.registry import task


@task(name="webhook")
async def webhook(payload: Any, ctx: JobContext) -> dict[str, Any]:
    payload = require_object("webhook", payload)
    url = check_url("webhook", payload.get("url"))
    secret = field("webhook", payload, "secret", str, None)
    event = field("webhook", payload, "event", dict)
    body = json.dumps(event, separators=(",", ":"), sort_keys=True)
    headers = {
        "Content-Type": "application/json",
        "X-Sluice-Event": str(event.get("event", "")),
        "X-Sluice-Delivery": f"{ctx.job_id}",
        **signed_headers(secret, body),
    }
    response = await send(ctx.http, "webhook", "POST", url, None, content=body, headers=headers)
    return {"status": response.status_code}
