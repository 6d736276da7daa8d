"""`webhook`: delivers a notification, `{"url": ..., "secret": ..., "event": {...}}`.

Sluice enqueues these itself (the notification outbox). The body is the event
as JSON, signed with the secret (see sluice.core.webhooks). Statuses are handled
as by the `http` task: a 2xx delivers, 5xx/408/425/429/unreachable retry, other
statuses give up; redirects are not followed; the outbound policy applies. The
secret is never logged, nor the URL's credentials or query.
"""

from __future__ import annotations

import json
from typing import Any

from sluice.core.tasks import WebhookPayload
from sluice.worker.context import JobContext
from sluice.worker.handlers.common import payload_of
from sluice.worker.handlers.http import exchange
from sluice.worker.registry import task


@task(name="webhook")
async def webhook(payload: Any, ctx: JobContext) -> dict[str, Any]:
    # Imported at the first delivery: hmac and hashlib are a couple of ms of every
    # worker's start-up to its first claim otherwise (issue 15).
    from sluice.core.webhooks import signed_headers

    delivery = payload_of("webhook", payload, WebhookPayload)
    body = json.dumps(delivery.event, separators=(",", ":"), sort_keys=True)
    headers = {
        "Content-Type": "application/json",
        "X-Sluice-Event": str(delivery.event.get("event", "")),
        "X-Sluice-Delivery": f"{ctx.job_id}",
        **signed_headers(delivery.secret, body),
    }
    answer = await exchange(
        ctx.http, "webhook", "POST", delivery.url, None, None, content=body, headers=headers
    )
    return {"status": answer.status}
