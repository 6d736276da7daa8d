"""The REST long-poll: GET /api/v1/jobs/{id}?wait=30s and /runs/{id}?wait=30s answer
at the end (woken by its notification), or when the wait is over; waits hold no
pooled connection and are bounded (503 past SLUICE_API_MAX_WAITS)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import uvicorn

from sluice.auth.principal import Role
from sluice.core.embedded import free_port
from sluice.main import create_app
from tests.api.conftest import api_settings, bearer
from tests.factories import claim, complete, insert_job, scalar
from tests.worker.helpers import wait_for

__all__ = ["api_settings"]


@pytest.fixture
async def make_client(api_settings) -> AsyncIterator[Callable]:
    """The API served for real in this event loop (requests run concurrently, as they
    would in production); a client of it. Pass settings overrides."""
    served: list[tuple[uvicorn.Server, asyncio.Task, httpx.AsyncClient]] = []

    async def start(**overrides) -> httpx.AsyncClient:
        app = create_app(dataclasses.replace(api_settings, **overrides))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        task = asyncio.create_task(server.serve())
        await wait_for(lambda: server.started or task.done(), what="the API to start")
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60)
        client.app = app  # for a test to see the app's state (its waits under way)
        served.append((server, task, client))
        return client

    yield start
    for server, task, client in served:
        await client.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 20)


def viewer() -> dict[str, str]:
    """A viewer's token, minted when asked (tokens live 5 minutes; a module-level
    one would expire before a long test session reaches these tests)."""
    return bearer(Role.viewer)


async def _waiters(db) -> int:
    return await scalar(db, "SELECT count(*) FROM sluice.job_waiters")


async def test_a_job_long_poll_answers_at_the_end(make_client, db):
    client = await make_client()
    job = await insert_job(db, "noop", queue="manual")
    await claim(db, job)
    asked = time.monotonic()
    polling = asyncio.create_task(client.get(f"/api/v1/jobs/{job}?wait=30s", headers=viewer()))
    await wait_for(lambda: _waiters(db), what="the request's waiter")
    await complete(db, job, result={"n": 1})
    response = await asyncio.wait_for(polling, 30)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "succeeded" and response.json()["result"] == {"n": 1}
    assert time.monotonic() - asked < 25  # at the job's end, not at the wait's (30 s)


async def test_a_job_long_poll_answers_the_job_as_it_is_when_the_wait_is_over(make_client, db):
    client = await make_client()
    job = await insert_job(db, "noop", queue="manual")
    began = time.monotonic()
    response = await client.get(f"/api/v1/jobs/{job}", params={"wait": "0.5"}, headers=viewer())
    assert response.status_code == 200 and response.json()["state"] == "ready"
    assert 0.5 <= time.monotonic() - began < 10
    # An ended job answers at once.
    await claim(db, job)
    await complete(db, job)
    began = time.monotonic()
    response = await client.get(f"/api/v1/jobs/{job}?wait=60s", headers=viewer())
    assert response.json()["state"] == "succeeded" and time.monotonic() - began < 5


async def test_bad_waits_and_other_tenants(make_client, db):
    client = await make_client()
    job = await insert_job(db, "noop", queue="manual")
    for wait in ("forever", "2m", "-1", "1e9"):
        response = await client.get(f"/api/v1/jobs/{job}", params={"wait": wait}, headers=viewer())
        assert response.status_code == 422, (wait, response.text)
        assert response.json()["errors"][0]["field"] == "wait"
    response = await client.get(
        f"/api/v1/jobs/{job}?wait=5s", headers=bearer(Role.viewer, tenant="other")
    )
    assert response.status_code == 404
    assert await _waiters(db) == 0


async def test_waits_are_bounded_and_hold_no_connection(make_client, db):
    client = await make_client(max_waits=3, pool_size=1)
    job = await insert_job(db, "noop", queue="manual")
    await claim(db, job)
    polls = [
        asyncio.create_task(client.get(f"/api/v1/jobs/{job}?wait=30s", headers=viewer()))
        for _ in range(3)
    ]
    await wait_for(lambda: _waiters(db), what="the waiters")
    waits = client.app.state.waiting
    await wait_for(lambda: waits.count == 3, what="all three requests to wait")
    # The one pooled connection is free for other requests meanwhile.
    began = time.monotonic()
    listed = await client.get("/api/v1/jobs", headers=viewer())
    assert listed.status_code == 200 and time.monotonic() - began < 5
    refused = await client.get(f"/api/v1/jobs/{job}?wait=30s", headers=viewer())
    assert refused.status_code == 503 and "SLUICE_API_MAX_WAITS" in refused.json()["message"]
    await complete(db, job)
    answers = await asyncio.wait_for(asyncio.gather(*polls), 10)
    assert [a.json()["state"] for a in answers] == ["succeeded"] * 3


async def test_a_run_long_poll_answers_at_the_end(make_client, db):
    client = await make_client()
    run = await scalar(
        db,
        """SELECT sluice.dag_run_create('default',
               '{"nodes": [{"id": "a", "task": "noop", "queue": "manual"}]}')""",
    )
    job = await scalar(db, "SELECT id FROM sluice.jobs WHERE run_id = %s", run)
    await claim(db, job)
    polling = asyncio.create_task(client.get(f"/api/v1/runs/{run}?wait=30s", headers=viewer()))
    await wait_for(
        lambda: scalar(db, "SELECT count(*) FROM sluice.run_waiters"), what="the run's waiter"
    )
    await complete(db, job)
    response = await asyncio.wait_for(polling, 10)
    assert response.status_code == 200, response.text
    assert response.json()["run"]["state"] == "succeeded"
    assert [n["state"] for n in response.json()["nodes"]] == ["succeeded"]
