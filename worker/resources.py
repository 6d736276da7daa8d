"""What the worker shares with every handler: settings, one HTTP client, and
progress reporting through the connection pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice.core import protocol
from sluice.worker.retrying import pooled

if TYPE_CHECKING:
    import httpx
    from psycopg_pool import AsyncConnectionPool

    from sluice.core.protocol import ClaimedJob
    from sluice.worker.settings import WorkerSettings


class Resources:
    """Shared by the jobs of one worker; closed when the worker stops."""

    def __init__(self, settings: WorkerSettings, pool: AsyncConnectionPool | None) -> None:
        self.settings = settings
        self._pool = pool
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            from sluice.core.outbound_http import outbound_client

            # Within SLUICE_OUTBOUND_ALLOW: no request forgery through a job's URL.
            self._http = outbound_client(self.settings.outbound_allow)
        return self._http

    async def report_progress(self, job: ClaimedJob, value: Any) -> bool:
        if self._pool is None:
            raise RuntimeError("progress needs a database")
        async with pooled(self._pool) as conn:
            return await protocol.job_progress(
                conn, worker_id=self.settings.id, job=job.key, progress=value
            )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
