"""Every URL form libpq accepts works in every process: `sluice migrate`, the API,
the worker and its listener. The multi-host forms name a first host that is down
(nothing listens on its port), as after a failover, so libpq must move on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from urllib.parse import quote

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from sluice.core.db import NotificationCheck, normalize_url
from sluice.core.embedded import SUPERUSER, EmbeddedPostgres, free_port
from sluice.core.logging import redact_url
from sluice.http.settings import ApiSettings
from sluice.main import create_app
from sluice.worker.listener import Listener
from tests.api.conftest import SECRET, bearer
from tests.worker.helpers import ROOT, wait_for

FORMS = {
    # What `pg_autoctl show uri` prints: several host:port pairs in the authority.
    "multi-host authority": (
        "postgres://{user}:{pw}@127.0.0.1:{dead},127.0.0.1:{port}/{db}"
        "?target_session_attrs=read-write"
    ),
    "multi-host query": (
        "postgresql://{user}:{pw}@/{db}?host=127.0.0.1,127.0.0.1&port={dead},{port}"
        "&target_session_attrs=read-write"
    ),
    "key=value": (
        "host=127.0.0.1,127.0.0.1 port={dead},{port} dbname={db} user={user} "
        "password='{raw_pw}' target_session_attrs=read-write connect_timeout=5"
    ),
    "sqlalchemy dialect": "postgresql+psycopg://{user}:{pw}@127.0.0.1:{port}/{db}",
    "unix socket in authority": "postgresql://{user}@{socket}:{port}/{db}",
}


def url_for(form: str, pg_server: EmbeddedPostgres, db: str) -> str:
    raw_pw = pg_server.password_file.read_text().strip()
    return FORMS[form].format(
        user=SUPERUSER,
        pw=quote(raw_pw, safe=""),
        raw_pw=raw_pw.replace("\\", "\\\\").replace("'", "\\'"),
        dead=free_port(),
        port=pg_server.port,
        db=db,
        socket=quote(str(pg_server.socket_dir), safe=""),
    )


def test_normalize_url_only_takes_off_the_dialect():
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert normalize_url("postgres://u@h1:1,h2:2/db") == "postgresql://u@h1:1,h2:2/db"
    conninfo = "host=a,b port=1,2 dbname=x"
    assert normalize_url(conninfo) == conninfo
    assert normalize_url("service=sluice") == "service=sluice"


@pytest.mark.parametrize(
    "conninfo",
    [
        "host=db dbname=x user=u password=secret",
        "host=db password='se cr\\'et' dbname=x",
        "host=db PASSWORD = secret",
    ],
)
def test_key_value_passwords_stay_out_of_the_logs(conninfo):
    assert "secret" not in redact_url(conninfo) and "cr" not in redact_url(conninfo)
    assert "password" in redact_url(conninfo).lower()


def sluice_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@pytest.mark.parametrize("form", list(FORMS))
async def test_url_form_works_for_migrate_api_worker_and_listener(
    form, pg_server, empty_database, start_worker_on
):
    db = f"urlform_{list(FORMS).index(form)}"
    empty_database(db)
    url = url_for(form, pg_server, db)

    # sluice migrate, as a user runs it (the multi-host authority form failed here).
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluice",
        "migrate",
        env=sluice_env(SLUICE_DATABASE_URL=url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert b"sluice schema at" in out

    # The API: ready, and a job submitted through it.
    app = create_app(ApiSettings(database_url=url, jwt_secret=SECRET))
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        created = await client.post(
            "/api/v1/jobs", json={"task": "noop", "payload": {}}, headers=bearer("submitter")
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        # The worker (pool, writer, listener) runs it; the listener's self-test passes.
        worker = await start_worker_on(url)

        async def finished() -> bool:
            got = await client.get(f"/api/v1/jobs/{job_id}", headers=bearer("viewer"))
            return got.json()["state"] == "succeeded"

        await wait_for(finished, 20, f"job {job_id} to succeed")
        await wait_for(
            lambda: getattr(worker.listener.notifications, "state", None) == "ok", 10, "self-test"
        )


@pytest.mark.parametrize("form", ["multi-host authority", "key=value"])
async def test_listener_hears_notifications_through_a_multi_host_url(form, pg_server, database_url):
    db = database_url.split("/")[3].split("?")[0]
    url = url_for(form, pg_server, db)
    heard: list[str] = []
    connected = asyncio.Event()
    listener = Listener(
        url,
        on_jobs=heard.append,
        on_control=lambda _: None,
        on_connected=connected.set,
        self_test_within=10,
    )
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(connected.wait(), 15)
        await wait_for(
            lambda: (
                isinstance(listener.notifications, NotificationCheck)
                and listener.notifications.state == "ok"
            ),
            15,
            "the self-test",
        )
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            # Inserts notify only queues a worker waits on (sluice.notify_ready).
            await conn.execute("SELECT sluice.worker_waiting('url-test', '{urls}')")
            await conn.execute("INSERT INTO sluice.jobs (task, queue) VALUES ('noop', 'urls')")
        await wait_for(lambda: "urls" in heard, 10, "the wake-up")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
