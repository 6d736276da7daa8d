"""Fixtures for the dashboard tests: Debian's chromium driven by Playwright,
against `sluice api` serving the test's database.

Never `playwright install`: it downloads a browser, and these machines have no
internet. The flags below keep chromium from trying to reach it either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from sluice.auth.principal import Role
from sluice.auth.tokens import mint
from sluice.core.db import connection_kwargs
from tests.api.conftest import SECRET, api_server  # noqa: F401 - a fixture used here

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# How long a page may take to show what the database holds (polls run every 1-5 s).
EVENTUALLY_MS = 15_000
expect.set_options(timeout=EVENTUALLY_MS)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless chromium for the dashboard tests (each test gets its own context)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def token(role: Role, tenant: str = "default", subject: str = "dashboard-test") -> str:
    return mint(SECRET, role, tenant=tenant, ttl=timedelta(minutes=10), subject=subject)


@pytest.fixture
def sign_in(browser: Browser, api_server: str) -> Iterator[Callable[..., Page]]:  # noqa: F811
    """Open a browser signed in with a token for `role` (through the login link);
    keyword arguments set up its context (viewport, timezone_id, is_mobile...)."""
    contexts: list[BrowserContext] = []

    def _sign_in(role: Role = Role.operator, tenant: str = "default", **options) -> Page:
        options.setdefault("viewport", {"width": 1360, "height": 900})
        context = browser.new_context(base_url=api_server, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(EVENTUALLY_MS)
        page.goto(f"/login?token={token(role, tenant)}")
        page.wait_for_url(f"{api_server}/")
        return page

    yield _sign_in
    for context in contexts:
        context.close()


@pytest.fixture
def sql(database_url: str) -> Iterator[psycopg.Connection]:
    """A plain (sync) autocommit connection to the test's database, for setup and checks."""
    with psycopg.connect(database_url, **connection_kwargs()) as conn:
        yield conn


@pytest.fixture(scope="package")
def screenshots() -> Path:
    """Where the pages' screenshots go (test-artifacts/, not committed)."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


def shoot(page: Page, folder: Path, name: str, *, full_page: bool = True) -> None:
    """Save a screenshot of the page (by default all of it, not just the window)."""
    page.screenshot(path=folder / f"{name}.png", full_page=full_page)


@pytest.fixture
def start_worker(database_url: str, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen]]:
    """Start a real `sluice worker` on the test's database (queue `default`); it is
    stopped (SIGTERM, then SIGKILL) at the end of the test."""
    started: list[subprocess.Popen] = []
    log = tmp_path / "worker.log"

    def _start() -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env.update(SLUICE_DATABASE_URL=database_url, SLUICE_QUEUES="default")
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "sluice"), "worker", "--concurrency", "4"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    yield _start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
