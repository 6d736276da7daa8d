"""Bad input gets one JSON error shape and a 4xx, never a 500."""

from __future__ import annotations

import pytest

JOBS = "/api/v1/jobs"


def assert_error_shape(body: dict, status: int) -> None:
    assert set(body) == {"status", "error", "message", "errors"}
    assert body["status"] == status and isinstance(body["message"], str)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[1, 2", "application/json"),
        (b"\xff\xfe", "application/json"),
    ],
)
async def test_malformed_bodies_are_4xx(client, submitter, content, content_type):
    r = await client.post(
        JOBS, content=content, headers={**submitter, "Content-Type": content_type}
    )
    assert r.status_code in (400, 422), r.text
    assert_error_shape(r.json(), r.status_code)


async def test_wrong_json_types_name_the_field(client, submitter):
    r = await client.post(JOBS, json=["not", "an", "object"], headers=submitter)
    assert r.status_code == 422
    r = await client.post(JOBS, json={"task": "noop", "run_at": "yesterday"}, headers=submitter)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "run_at"
    r = await client.post(
        JOBS, json={"task": "noop", "run_at": "2030-01-01T00:00:00"}, headers=submitter
    )  # no time zone
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "run_at"


async def test_oversized_bodies_are_413(client, submitter):
    big = {"task": "noop", "payload": "x" * 70_000}  # the test limit is 64 KiB
    r = await client.post(JOBS, json=big, headers=submitter)
    assert r.status_code == 413
    assert_error_shape(r.json(), 413)

    # Chunked (no Content-Length): counted as it arrives. Spoken to the app in ASGI
    # directly, since the test client always sends a length.
    chunks = [b" " * 4096] * 20 + [b'{"task": "noop"}']
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": JOBS,
        "raw_path": JOBS.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("test", 80),
        "client": ("test", 1),
        "headers": [
            (k.lower().encode(), v.encode())
            for k, v in {**submitter, "Content-Type": "application/json"}.items()
        ],
    }
    await client.app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413


async def test_batches_have_their_own_larger_limit(client, submitter):
    jobs = [{"task": "noop", "payload": "y" * 100} for _ in range(1000)]  # ~130 KB
    r = await client.post(f"{JOBS}/batch", json={"jobs": jobs}, headers=submitter)
    assert r.status_code == 201, r.text


async def test_unknown_routes_and_methods_use_the_error_shape(client, submitter):
    r = await client.get("/api/v1/nothing", headers=submitter)
    assert r.status_code == 404
    assert_error_shape(r.json(), 404)
    r = await client.delete(JOBS, headers=submitter)
    assert r.status_code == 405
    assert_error_shape(r.json(), 405)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/99999999999999999999999",
        "/api/v1/jobs/0",
        "/api/v1/jobs?limit=0",
        "/api/v1/jobs?limit=abc",
        "/api/v1/jobs?state=sideways",
        "/api/v1/jobs?run_id=-1",
        "/api/v1/jobs?created_after=never",
        "/api/v1/dags/has%20space",
        "/api/v1/queues/%00",
    ],
)
async def test_bad_parameters_are_4xx(client, admin, path):
    r = await client.get(path, headers=admin)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert_error_shape(r.json(), r.status_code)
