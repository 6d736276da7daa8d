"""Clients that keep submitting while the scenario breaks things, and the checks
on what they were told.

A submission is *acknowledged* when the client got an id back. Every submission
carries an idempotency key and is repeated with the same key until it is
acknowledged (or the client gives up), as a careful client does; so a timeout
whose request did commit must not create a second job.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from sluice.auth.principal import Role
from sluice.auth.tokens import mint


def admin_token(secret: str) -> str:
    from datetime import timedelta

    return mint(secret, Role.admin, tenant="default", ttl=timedelta(hours=1))


@dataclass
class Acks:
    """What one client was told: key -> id, and when each acknowledgement came."""

    ids: dict[str, int] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest stretch in [start, end] without an acknowledgement."""
        marks = [start, *(t for t in self.times if start <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(marks))


class Client(threading.Thread):
    """Submits one job (or run) every `every` seconds until stopped."""

    def __init__(self, name: str, submit, *, every: float = 0.05, give_up: float = 60) -> None:
        super().__init__(name=name, daemon=True)
        self.submit = submit
        self.every = every
        self.give_up = give_up
        self.acks = Acks()
        self._halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            key = f"{self.name}-{n}-{uuid.uuid4().hex[:8]}"
            n += 1
            deadline = time.monotonic() + self.give_up
            while True:
                try:
                    self.acks.ids[key] = self.submit(key)
                    self.acks.times.append(time.monotonic())
                    break
                except Exception as exc:  # any failure: retry the same key
                    self.acks.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                    # A stop ends new submissions, never the one in hand: a client
                    # that dropped it would report as lost what it gave up on.
                    if time.monotonic() > deadline:
                        self.acks.unacknowledged.append(key)
                        break
                    time.sleep(0.1)
            self._halt.wait(self.every)

    def stop(self) -> Acks:
        """Submit nothing new; wait until the submission in hand is answered."""
        self._halt.set()
        self.join(self.give_up + 10)
        return self.acks


class SqlSubmitter:
    """sluice.enqueue() through a psycopg connection, reconnecting after errors."""

    def __init__(self, url: str, task: str = "tick", queue: str = "default", **payload) -> None:
        self.url, self.task, self.queue, self.payload = url, task, queue, payload
        self.conn: psycopg.Connection | None = None

    def __call__(self, key: str) -> int:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
            row = self.conn.execute(
                "SELECT sluice.enqueue(%s, %s, queue => %s, idempotency_key => %s)",
                (self.task, Jsonb(self.payload), self.queue, key),
            ).fetchone()
            assert row is not None
            return row[0]
        except Exception:
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close()
            self.conn = None
            raise


class ApiSubmitter:
    """POST /api/v1/jobs (or /runs with a definition) with an idempotency key."""

    def __init__(
        self, base: str, token: str, *, run: dict[str, Any] | None = None, **job: Any
    ) -> None:
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        self.run, self.job = run, job

    def __call__(self, key: str) -> int:
        if self.run is not None:
            response = self.http.post(
                "/api/v1/runs", json={"definition": self.run, "idempotency_key": key}
            )
        else:
            response = self.http.post("/api/v1/jobs", json={**self.job, "idempotency_key": key})
        if response.status_code not in (200, 201):
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return response.json()["id"]


def chain(n: int = 3, seconds: float = 0.1, queue: str = "default") -> dict[str, Any]:
    """A DAG definition: n tick nodes in a line."""
    return {
        "nodes": [
            {
                "id": f"n{i}",
                "task": "tick",
                "queue": queue,
                "payload": {"seconds": seconds},
                **({"depends_on": [f"n{i - 1}"]} if i else {}),
            }
            for i in range(n)
        ]
    }


def executions(log_path) -> dict[int, list[tuple[int, str, str]]]:
    """job id -> [(attempt, worker, start|end)] from the handlers' execution log."""
    seen: dict[int, list[tuple[int, str, str]]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in log_path.read_text().splitlines():
            job, attempt, worker, what = line.split()
            seen.setdefault(int(job), []).append((int(attempt), worker, what))
    return seen


def starts(log_path) -> dict[int, int]:
    """job id -> how many times a handler started on it."""
    return {
        job: sum(1 for _, _, what in events if what == "start")
        for job, events in executions(log_path).items()
    }
