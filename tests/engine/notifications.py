"""Collect NOTIFY messages deterministically.

Notifications are delivered in commit order, so after the statements under
test commit we send a sentinel on the same channel from another transaction:
once it arrives, everything committed before it has arrived too. No sleeping.
"""

from __future__ import annotations

import asyncio
import uuid

from psycopg import AsyncConnection


async def listen(conn: AsyncConnection, *channels: str) -> None:
    for channel in channels:
        await conn.execute(f"LISTEN {channel}")


async def drain(listener: AsyncConnection, sender: AsyncConnection, channel: str) -> list[str]:
    """Payloads received on `channel` before a sentinel sent now by `sender`."""
    sentinel = f"sentinel-{uuid.uuid4()}"
    await sender.execute("SELECT pg_notify(%s, %s)", (channel, sentinel))
    payloads: list[str] = []
    async with asyncio.timeout(30):
        async for notify in listener.notifies():
            if notify.payload == sentinel:
                return payloads
            if notify.channel == channel:
                payloads.append(notify.payload)
    raise AssertionError("unreachable")


async def wait_on(conn: AsyncConnection, *queues: str, worker: str = "sleeper") -> None:
    """Register `worker` as waiting on `queues`: inserts into them are notified
    (sluice.notify_ready notifies only queues a worker waits on)."""
    await conn.execute(
        "SELECT sluice.worker_register(%s, 'test-host', 1, %s, 1, '5 seconds', 'test')",
        (worker, list(queues)),
    )
    await conn.execute("SELECT sluice.worker_waiting(%s, %s)", (worker, list(queues)))
