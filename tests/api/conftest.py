"""Fixtures for the REST API tests: the app on the test's database, and tokens."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from sluice.auth.principal import Role
from sluice.auth.tokens import mint
from sluice.core.embedded import free_port
from sluice.http.settings import ApiSettings
from sluice.main import create_app

SECRET = "test-secret-long-enough-for-every-hmac-algorithm-including-hs512!"


@pytest.fixture
def api_settings(database_url: str) -> ApiSettings:
    """Settings for an API on the test's database (HS256 tokens, shell allowed)."""
    return ApiSettings(
        database_url=database_url,
        jwt_secret=SECRET,
        allow_shell=True,
        max_body_bytes=64 * 1024,
        max_batch_body_bytes=8 * 1024 * 1024,
    )


def bearer(role: Role | str | None, tenant: str = "default", **claims) -> dict[str, str]:
    """Authorization headers for a token with `role` (None: a token naming no role)."""
    roles = [] if role is None else [role.name if isinstance(role, Role) else role]
    # `roles` given explicitly: it also mints tokens naming no role, or an unknown one.
    token = mint(
        SECRET, Role.viewer, tenant=tenant, ttl=timedelta(minutes=5), **{"roles": roles, **claims}
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def make_client(api_settings: ApiSettings) -> AsyncIterator[Callable]:
    """Start API clients, each on its own app (pass settings overrides)."""
    opened: list[AsyncTestClient] = []

    async def _make(**overrides) -> AsyncTestClient:
        app = create_app(dataclasses.replace(api_settings, **overrides))
        client = AsyncTestClient(app=app, raise_server_exceptions=False)
        await client.__aenter__()
        opened.append(client)
        return client

    yield _make
    for client in opened:
        await client.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client) -> AsyncTestClient:
    """A client of the API on the test's database (no token: set headers per call)."""
    return await make_client()


@pytest.fixture
def admin() -> dict[str, str]:
    return bearer(Role.admin)


@pytest.fixture
def operator() -> dict[str, str]:
    return bearer(Role.operator)


@pytest.fixture
def submitter() -> dict[str, str]:
    return bearer(Role.submitter)


@pytest.fixture
def viewer() -> dict[str, str]:
    return bearer(Role.viewer)


@pytest.fixture
def api_server(database_url: str, tmp_path) -> Iterator[str]:
    """`sluice api` running in a subprocess on the test's database; yields its base URL.

    For end-to-end tests with real workers (start them on the same `database_url`)
    and for clients that need a real socket (load, fuzzing).
    """
    port = free_port()
    log = (tmp_path / "api.log").open("w")
    env = {
        **os.environ,
        "SLUICE_DATABASE_URL": database_url,
        "SLUICE_JWT_SECRET": SECRET,
        "SLUICE_API_PORT": str(port),
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "sluice"), "api"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "sluice api did not answer /health in 30 s"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
