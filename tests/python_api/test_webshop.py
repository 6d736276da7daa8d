"""The example web service (examples/webshop, its own `app` package): an order and
its job in one transaction, the typed result awaited within the request."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import uvicorn

from sluice.core.embedded import free_port
from tests.factories import rows, scalar
from tests.worker.helpers import wait_for

SHOP = Path(__file__).resolve().parents[2] / "examples" / "webshop"


@pytest.fixture
async def shop(database_url, monkeypatch) -> httpx.AsyncClient:
    monkeypatch.setenv("SLUICE_DATABASE_URL", database_url)
    main = importlib.import_module("examples.webshop.app.main")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(main.app, host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or task.done(), what="the shop to start")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    await asyncio.wait_for(task, 20)


async def test_an_order_and_its_invoice(shop, worker, db):
    await worker(task_modules=("examples.webshop.app.tasks",), queues=("default",))
    response = await shop.post("/orders", json={"email": "ada@example.com", "total": "42.50"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["invoice"] == {
        "order_id": body["order_id"],
        "number": f"INV-{body['order_id']:06d}",
        "net": "35.42",
        "vat": "7.08",
        "gross": "42.50",
    }
    assert await rows(db, "SELECT id, invoice_job FROM shop.orders") == [
        {"id": body["order_id"], "invoice_job": body["job_id"]}
    ]
    assert Decimal(body["invoice"]["net"]) + Decimal(body["invoice"]["vat"]) == Decimal("42.50")


async def test_a_failed_invoice_is_answered_with_its_error(shop, worker):
    await worker(task_modules=("examples.webshop.app.tasks",), queues=("default",))
    response = await shop.post("/orders", json={"email": "ada@example.com", "total": "0"})
    assert response.status_code == 422
    assert "nothing to invoice" in response.json()["error"]


async def test_an_order_that_rolls_back_leaves_no_job(shop, db):
    """A bad email column value (too long) fails the INSERT: no order, no job."""
    response = await shop.post("/orders", json={"email": "x" * 400, "total": "1"})
    assert response.status_code == 500
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 0


def test_the_shop_imports_its_own_app_package_beside_sluice():
    """From its own folder, `app` is the shop's package and `sluice` is Sluice."""
    code = (
        "import app.main, sluice, sluice.core.db; "
        f"assert app.main.__file__.startswith({str(SHOP)!r}); print(sluice.task)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=SHOP, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
