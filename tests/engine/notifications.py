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
    async with asyncio.timeout(10):
        async for notify in listener.notifies():
            if notify.payload == sentinel:
                return payloads
            if notify.channel == channel:
                payloads.append(notify.payload)
    raise AssertionError("unreachable")
