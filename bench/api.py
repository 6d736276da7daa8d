"""A `sluice api` process for the REST scenarios, and an admin token for it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx

from bench.harness import spawn
from sluice.auth.principal import Role
from sluice.auth.tokens import mint
from sluice.core.embedded import free_port


@contextlib.asynccontextmanager
async def api_process(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Start `sluice api` on a free port; yield a client carrying an admin token."""
    secret = secrets.token_urlsafe(32)
    port = free_port()
    proc = spawn(
        ["api", "--host", "127.0.0.1", "--port", str(port)], url, {"SLUICE_JWT_SECRET": secret}
    )
    token = mint(secret, Role.admin, subject="sluice-bench", ttl=timedelta(hours=2))
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            limits=limits,
            timeout=60,
        ) as client:
            for _ in range(600):
                if proc.poll() is not None:
                    raise RuntimeError(f"sluice api exited with {proc.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("sluice api did not answer in time")
            yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
