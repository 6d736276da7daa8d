"""What a pooler or a replica changes, checked on a plain server: prepared
statements that a server connection lost, the LISTEN/NOTIFY self-test, and the
read pool. The same behaviours through a real PgBouncer and a real standby are
in tests/scale/scenarios/ (run by tests/scale/run.sh)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluice.core import db as sluice_db
from sluice.core.db import (
    NOTIFICATIONS,
    PREPARED,
    check_notifications,
    connect,
    open_pool,
    open_read_pool,
    prepared_statements_problem,
)
from sluice.core.jobs import JOB_STATES
from sluice.core.protocol import connection_probe
from sluice.core.queries import sql
from sluice.http.errors import unavailable_reason
from tests.api.conftest import bearer
from tests.factories import insert_job, rows
from tests.worker.helpers import wait_for


@pytest.fixture(autouse=True)
def fresh_switches() -> Iterator[None]:
    """The process-wide switches start and end each test as a new process has them."""
    saved = (PREPARED.enabled, PREPARED.reason, dict(PREPARED._probed))
    yield
    PREPARED.enabled, PREPARED.reason, PREPARED._probed = saved
    NOTIFICATIONS.state, NOTIFICATIONS.detail, NOTIFICATIONS.latency = "unchecked", None, None


FAR = datetime(2999, 1, 1, tzinfo=UTC)


async def deallocate_behind_psycopgs_back(conn) -> None:
    # psycopg forgets its statements when it sees DEALLOCATE ALL; inside DO it does not.
    await conn.execute("DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$", prepare=False)


async def test_the_probe_finds_nothing_wrong_on_a_direct_connection(database_url):
    assert await prepared_statements_problem(database_url) is None
    conn = await connect(database_url)
    try:
        assert conn.prepare_threshold == sluice_db.PREPARE_THRESHOLD
    finally:
        await conn.close()
    assert PREPARED.enabled


async def test_a_lost_prepared_statement_turns_preparing_off_and_the_query_still_runs(
    database_url,
):
    conn = await connect(database_url)
    try:
        conn.prepare_threshold = 0  # prepare at once
        assert (await connection_probe(conn, token="t")).token == "t"
        # What a pooler does when the next statement lands on another server
        # connection: the name psycopg prepared is not there.
        await deallocate_behind_psycopgs_back(conn)
        assert (await connection_probe(conn, token="t")).token == "t"
        assert not PREPARED.enabled
        assert conn.prepare_threshold is None
        assert "lost a prepared statement" in (PREPARED.reason or "")
        # Every other connection opened from now on prepares nothing.
        other = await connect(database_url)
        assert other.prepare_threshold is None
        await other.close()
    finally:
        await conn.close()


async def test_inside_a_transaction_the_error_propagates_and_the_retry_runs_unprepared(
    database_url,
):
    conn = await connect(database_url)
    try:
        conn.prepare_threshold = 0
        await connection_probe(conn, token="t")
        await deallocate_behind_psycopgs_back(conn)
        with pytest.raises(psycopg.errors.InvalidSqlStatementName) as lost:
            async with conn.transaction():
                await connection_probe(conn, token="t")
        # The API answers it with a 503 to retry (the retry runs unprepared), never a 500.
        assert "pooler lost a prepared statement" in (unavailable_reason(lost.value) or "")
        async with conn.transaction():
            assert (await connection_probe(conn, token="t")).token == "t"
    finally:
        await conn.close()
    assert not PREPARED.enabled


async def test_the_probe_knows_whether_the_server_holds_it_under_psycopgs_name(database_url):
    """What tells a tracking pooler (it prepares statements on each server connection
    under names of its own) from another client's copy of the probe left on a
    server connection under psycopg's name (`_pg3_N`)."""
    conn = await connect(database_url)
    try:
        conn.prepare_threshold = 0
        assert (await connection_probe(conn, token="t")).untranslated is True
    finally:
        await conn.close()
    conn = await connect(database_url, prepare=False)
    try:
        text = sql("connection_probe").replace("%(token)s", "$1").replace("%%", "%")
        await conn.execute(f"PREPARE pooler_named_1 (text) AS {text}")
        cur = await conn.execute("EXECUTE pooler_named_1('t')")
        assert await cur.fetchone() == (conn.info.backend_pid, "t", False)
    finally:
        await conn.close()


async def test_setting_prepare_off_skips_the_probe(database_url, monkeypatch):
    async def fail(url):
        raise AssertionError("probed although prepare=False")

    monkeypatch.setattr(sluice_db, "prepared_statements_problem", fail)
    conn = await connect(database_url, prepare=False)
    assert conn.prepare_threshold is None
    await conn.close()


async def test_self_test_passes_when_listen_and_notify_reach_the_same_database(database_url):
    await check_notifications(database_url, database_url, within=10)
    assert NOTIFICATIONS.state == "ok"
    assert NOTIFICATIONS.warning() is None
    assert NOTIFICATIONS.latency is not None and NOTIFICATIONS.latency < 10


async def test_self_test_reports_notifications_that_do_not_arrive(database_url, other_database_url):
    # Notifications do not cross databases: as good as a pooler swallowing them.
    await check_notifications(other_database_url, database_url, within=1)
    assert NOTIFICATIONS.state == "not delivered"
    assert "SLUICE_LISTEN_URL" in (NOTIFICATIONS.warning() or "")


async def test_the_self_test_passes_on_what_arrives_with_its_token(database_url, monkeypatch):
    """A job's wake-up that comes in the same packet as the self-test's token
    reaches the worker (stopping at the token once dropped the rest of the packet)."""
    monkeypatch.setattr(sluice_db, "_token", lambda: "fixed-token")
    listening = await connect(database_url, prepare=False)
    sender = await connect(database_url, prepare=False)
    try:
        await listening.execute("LISTEN sluice_control")
        await listening.execute("LISTEN sluice_jobs")
        # One transaction: its notifications are delivered together, token first.
        async with sender.transaction():
            await sender.execute(
                "SELECT pg_notify('sluice_control', %s)",
                (json.dumps({sluice_db.SELF_TEST_KEY: "fixed-token"}),),
            )
            await sender.execute(
                "SELECT pg_notify('sluice_jobs', q) FROM unnest('{a,b}'::text[]) q"
            )
        others: list[str] = []
        result = await sluice_db.notification_self_test(
            listening, database_url, within=10, on_other=lambda note: others.append(note.payload)
        )
        assert result.state == "ok"
        assert others == ["a", "b"]
    finally:
        await listening.close()
        await sender.close()


async def test_ready_reports_the_self_test(make_client, database_url, other_database_url):
    client = await make_client(listen_url=other_database_url)

    async def checked():
        body = (await client.get("/ready")).json()
        return body if body["notifications"] not in ("unchecked", "checking") else None

    body = await wait_for(checked, 20, "the self-test")
    assert body["status"] == "ready"
    assert body["notifications"] == "not delivered"
    assert "SLUICE_LISTEN_URL" in body["warning"]


async def test_read_pool_falls_back_to_the_primary_pool(database_url):
    primary = await open_pool(database_url, max_size=2)
    try:
        assert await open_read_pool(None, primary) is primary
        assert await open_read_pool("", primary) is primary
    finally:
        await primary.close()


def _depths(exposition: str) -> dict[tuple[str, str], float]:
    """The sluice_queue_depth samples of a /metrics body, by (queue, state)."""
    return {
        (sample.labels["queue"], sample.labels["state"]): sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "sluice_queue_depth"
        for sample in family.samples
    }


async def test_metrics_queue_depths_come_from_the_read_pool(make_client, db, other_database_url):
    # Queue names of this test's own: nothing else in the process or its databases has them.
    mine = uuid.uuid4().hex[:8]
    on_primary, on_replica = f"primary-{mine}", f"replica-{mine}"
    job_id = await insert_job(db, queue=on_primary)
    async with await psycopg.AsyncConnection.connect(other_database_url, autocommit=True) as o:
        await insert_job(o, queue=on_replica)
        await insert_job(o, queue=on_replica, state="scheduled", run_at=FAR)
        replica_stats = await rows(o, "SELECT * FROM sluice.queue_stats")
    client = await make_client(read_database_url=other_database_url)
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    depths = _depths(answer.text)
    # Exactly what the replica's queue_stats holds, every queue and state of it...
    assert depths == {
        (row["queue"], state): float(row[state]) for row in replica_stats for state in JOB_STATES
    }
    assert depths[(on_replica, "ready")] == 1 and depths[(on_replica, "scheduled")] == 1
    # ...and nothing of the primary's.
    assert not [key for key in depths if key[0] == on_primary]
    # The primary pool still serves a single job's read.
    job = await client.get(f"/api/v1/jobs/{job_id}", headers=bearer("viewer"))
    assert job.status_code == 200 and job.json()["queue"] == on_primary
