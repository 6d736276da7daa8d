"""One execution per (job, attempt) in a worker, and leases that outlive a
blocked event loop: real `sluice worker` processes stopped with SIGSTOP past
their lease, async handlers that block the loop, a second Ctrl-C."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import signal
import time
from pathlib import Path

import pytest

from tests.factories import WORKER, claim, fetch_job, insert_job, make_job, rows, scalar
from tests.worker.helpers import attempts, job_state, wait_for, wait_let_go, wait_state

Event = tuple[int, int, str, float]  # job, attempt, start|end, monotonic time


def read_events(path: Path) -> list[Event]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        job, attempt, what, at = line.split()
        events.append((int(job), int(attempt), what, float(at)))
    return events


def seen(path: Path, job_id: int, attempt: int, what: str) -> bool:
    return any(e[:3] == (job_id, attempt, what) for e in read_events(path))


def assert_one_attempt_at_a_time(events: list[Event]) -> None:
    """Every attempt that started ended, and none started before the one before it ended."""
    spans: dict[tuple[int, int], list[float]] = {}
    for job, attempt, what, at in events:
        spans.setdefault((job, attempt), []).append(at)
        assert (what == "start") == (len(spans[(job, attempt)]) == 1), events
    assert all(len(s) == 2 for s in spans.values()), events
    for job in {k[0] for k in spans}:
        ordered = sorted(s for k, s in spans.items() if k[0] == job)
        for before, after in itertools.pairwise(ordered):
            assert after[0] >= before[1], f"attempts of job {job} overlapped: {events}"


async def lease_expired(db, job_id: int) -> bool:
    return await scalar(
        db, "SELECT lease_expires_at < now() FROM sluice.jobs WHERE id = %s", job_id
    )


async def rescue_now(db, job_id: int) -> None:
    """What the rescuer would do to a job whose lease expired, at once: in one
    transaction, so a heartbeat cannot slip in between."""
    async with db.transaction():
        await db.execute(
            "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (job_id,),
        )
        rescued = await rows(db, "SELECT id FROM sluice.job_rescue_expired()")
    assert [r["id"] for r in rescued] == [job_id]


async def test_a_heartbeat_renews_only_the_attempts_it_names(db):
    job_id = await make_job(db, "running", backoff_base="0")
    await rescue_now(db, job_id)
    await claim(db, job_id)  # the same worker claims it again: attempt 2
    await db.execute("UPDATE sluice.jobs SET lease_expires_at = now() WHERE id = %s", (job_id,))
    renewed = await rows(
        db,
        "SELECT * FROM sluice.job_heartbeat(%s, %s, %s, '1 minute')",
        WORKER,
        [job_id, job_id],
        [1, 2],
    )
    assert renewed == [{"id": job_id, "attempt": 2}]  # the stale attempt 1 renews nothing
    assert await scalar(
        db, "SELECT lease_expires_at > now() FROM sluice.jobs WHERE id = %s", job_id
    )
    assert (
        await rows(
            db, "SELECT * FROM sluice.job_heartbeat(%s, %s, %s, '1 minute')", WORKER, [job_id], [1]
        )
        == []
    )


async def test_a_worker_stopped_past_its_lease_runs_one_attempt_at_a_time(
    db, spawn_worker, tmp_path
):
    log = tmp_path / "events"
    job_id = await insert_job(
        db, "overlap_probe", payload={"file": str(log), "seconds": 60}, backoff_base="0"
    )
    proc = spawn_worker(SLUICE_WORKER_ID="w", SLUICE_MAINTENANCE="0")
    await wait_for(lambda: seen(log, job_id, 1, "start"), 20, "attempt 1 to start")
    proc.signal(signal.SIGSTOP)
    try:
        await wait_for(lambda: lease_expired(db, job_id), 10, "the lease to expire")
        # A maintenance leader elsewhere rescues the job; it is ready again at once.
        rescued = await rows(db, "SELECT id FROM sluice.job_rescue_expired()")
        assert [r["id"] for r in rescued] == [job_id]
        assert await job_state(db, job_id) == "ready"
    finally:
        proc.signal(signal.SIGCONT)
    # The same worker claims the job again: attempt 2 starts only once attempt 1 ended.
    await wait_state(db, job_id, "succeeded", within=30)
    assert [(a[0], a[1]) for a in await attempts(db, job_id)] == [(1, "rescued"), (2, "succeeded")]
    assert (await fetch_job(db, job_id))["result"] == {"attempt": 2}
    assert_one_attempt_at_a_time(read_events(log))
    assert seen(log, job_id, 2, "end")
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0, proc.output()
    output = proc.output()
    assert "Traceback" not in output and "KeyError" not in output, output
    # Attempt 1 was stopped when the lease keeper found it lost, or when attempt 2
    # was claimed, whichever came first after SIGCONT.
    assert (
        f"job {job_id} attempt 2 was claimed while attempt 1 still runs here" in output
        or "stopped 1 job(s) that are no longer this worker's" in output
    ), output


@pytest.mark.parametrize("task", ["overlap_probe", "sync_overlap_probe"])
async def test_a_job_claimed_again_while_its_old_attempt_runs_waits_for_it(
    db, start_worker, tmp_path, caplog, task
):
    log, release = tmp_path / "events", tmp_path / "release"
    # Heartbeats far apart: the claim, not the lease keeper, finds the old attempt.
    worker = await start_worker(heartbeat_interval=30, lease_ttl=60)
    # Attempt 1 runs until the test releases it (the async one is stopped by the
    # claim of attempt 2 before that), however long the rescue and the claim take.
    payload = {"file": str(log), "seconds": 60, "release": str(release)}
    job_id = await insert_job(db, task, payload=payload, backoff_base="0")
    await wait_for(lambda: seen(log, job_id, 1, "start"), 30, "attempt 1 to start")
    await rescue_now(db, job_id)  # as if this worker had stalled past its lease
    claimed_again = f"job {job_id} attempt 2 was claimed while attempt 1 still runs here"
    await wait_for(lambda: claimed_again in caplog.text, 30, "attempt 2 to be claimed")
    release.touch()
    await wait_state(db, job_id, "succeeded", within=30)
    # The sync handler ignores its stop signal: attempt 2 waited for its thread.
    assert_one_attempt_at_a_time(read_events(log))
    assert [(a[0], a[1]) for a in await attempts(db, job_id)] == [(1, "rescued"), (2, "succeeded")]
    await wait_let_go(worker)


async def test_a_handler_that_blocks_the_event_loop_keeps_its_lease(db, spawn_worker, tmp_path):
    log = tmp_path / "events"
    # Blocks its worker's event loop for 5 s; the lease is 2 s.
    job_id = await insert_job(db, "block_loop", payload={"file": str(log), "seconds": 5})
    proc = spawn_worker(SLUICE_WORKER_ID="w", SLUICE_MAINTENANCE="0")
    await wait_for(lambda: seen(log, job_id, 1, "start"), 20, "the handler to start")
    # Meanwhile a maintenance leader elsewhere rescues expired leases: it finds none.
    rescued = []
    deadline = time.monotonic() + 30
    while not seen(log, job_id, 1, "end"):
        assert time.monotonic() < deadline, "the handler did not end"
        rescued += await rows(db, "SELECT id FROM sluice.job_rescue_expired()")
        await asyncio.sleep(0.05)
    assert rescued == []
    await wait_state(db, job_id, "succeeded", within=10)
    assert [(a[0], a[1]) for a in await attempts(db, job_id)] == [(1, "succeeded")]
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    output = proc.output()
    # Reported while it happens, naming the job and the line that blocks...
    assert f"by job {job_id} attempt 1 (block_loop), at tasks.py:" in output, output
    # ...and once it is over.
    assert "the event loop was blocked for" in output


async def test_a_handler_that_blocks_the_loop_past_its_timeout_loses_its_lease(
    db, spawn_worker, tmp_path
):
    log = tmp_path / "events"
    job_id = await insert_job(
        db,
        "block_loop",
        payload={"file": str(log), "seconds": 8},
        timeout=dt.timedelta(seconds=0.5),
        max_attempts=1,
    )
    proc = spawn_worker(SLUICE_WORKER_ID="w", SLUICE_MAINTENANCE="0")
    await wait_for(lambda: seen(log, job_id, 1, "start"), 20, "the handler to start")
    # Its lease is kept up to its timeout, then left to expire: a hung handler
    # (here, a loop that does not come back in time) ends like a dead worker's.
    await wait_for(lambda: lease_expired(db, job_id), 6, "the lease to expire")
    assert not seen(log, job_id, 1, "end")
    rescued = await rows(db, "SELECT id, state::text FROM sluice.job_rescue_expired()")
    assert rescued == [{"id": job_id, "state": "failed"}]
    # The worker lives on.
    await wait_for(lambda: seen(log, job_id, 1, "end"), 20, "the handler to end")
    later = await insert_job(db, "echo")
    await wait_state(db, later, "succeeded", within=20)
    assert [(a[0], a[1]) for a in await attempts(db, job_id)] == [(1, "rescued")]
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0


async def test_ctrl_c_says_how_long_it_drains_and_a_second_one_ends_it_at_once(db, spawn_worker):
    proc = spawn_worker(SLUICE_WORKER_ID="w", SLUICE_SHUTDOWN_GRACE="120")
    job_id = await insert_job(db, "hang")
    await wait_state(db, job_id, "running", within=20)
    proc.signal(signal.SIGINT)
    await wait_for(lambda: "draining" in proc.output(), 10, "the draining message")
    assert "waiting up to 120s for 1 running job(s)" in proc.output()
    assert await job_state(db, job_id) == "running"  # given its grace
    proc.signal(signal.SIGINT)
    assert proc.wait(20) == 0, proc.output()  # far sooner than the grace period
    assert await job_state(db, job_id) == "ready"
    assert [(a[0], a[1]) for a in await attempts(db, job_id)] == [(1, "released")]
    assert "handed back now" in proc.output()
