"""A small client of the REST API, for the CLI commands (`submit`, `status`, `dlq`...).

It finds the API and a token the way a newcomer expects: flags, then
`SLUICE_API_URL` / `SLUICE_TOKEN`, then what `sluice up` left in its data
directory (`up.json`, `admin-token`), then http://127.0.0.1:8000.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
# What `sluice up` leaves in its data directory (app/stack.py writes them).
DEFAULT_DATA_DIR = ".sluice"
# Where the running `sluice up` is (API URL, database URL, pid), locked by it
# while it runs: an unlocked file is what a stopped or crashed one left.
STATE_FILE = "up.json"
TOKEN_FILE = "admin-token"  # noqa: S105 - a file name
SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name


class ApiError(Exception):
    """The API refused a request; `str()` is the message to show."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line per problem: the message (and status), then each field's problem
        unless the message already is that one problem."""
        if not isinstance(self.body, dict):
            text = str(self.body).strip() or "(no body)"
            return f"{text} ({self.status})"
        message = self.body.get("message") or self.body.get("error") or "request refused"
        problems = [
            f"{p.get('field') or '-'}: {p.get('message')}" for p in self.body.get("errors") or []
        ]
        if problems == [message]:
            problems = []
        return "\n".join([f"{message} ({self.status})", *(f"  {p}" for p in problems)])


class Unreachable(Exception):
    """No answer from the API at all (nothing listens, wrong host); `str()` says so."""


def data_dir() -> Path:
    """The data directory of `sluice up` (SLUICE_DATA_DIR, default ./.sluice)."""
    return Path(os.environ.get("SLUICE_DATA_DIR", DEFAULT_DATA_DIR))


def held(file: object) -> bool:
    """Whether another process holds the lock of the open `file` (see app/stack.py)."""
    try:
        fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)  # type: ignore[arg-type]
    except BlockingIOError:
        return True
    fcntl.flock(file, fcntl.LOCK_UN)  # type: ignore[arg-type]
    return False


def up_state(directory: Path | None = None) -> dict[str, Any] | None:
    """What the `sluice up` running on `directory` wrote (`{}` while it starts),
    or None when none runs there."""
    try:
        file = (directory or data_dir()).joinpath(STATE_FILE).open()
    except OSError:
        return None
    with file:
        if not held(file):
            return None
        with contextlib.suppress(ValueError):
            return json.loads(file.read())
        return {}


def resolve_api_url(flag: str | None) -> str:
    if flag:
        return flag.rstrip("/")
    state = up_state()
    if state and state.get("api_url"):
        return state["api_url"]
    return DEFAULT_API_URL


def resolve_token(flag: str | None) -> str | None:
    if flag:
        return flag
    token_file = data_dir() / TOKEN_FILE
    return token_file.read_text().strip() if token_file.is_file() else None


class Client:
    """`await client.get("/jobs/1")` against `<api_url>/api/v1`."""

    def __init__(self, api_url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.api_url = api_url
        self._http = httpx.AsyncClient(base_url=f"{api_url}/api/v1", headers=headers, timeout=30)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the API at {self.api_url} ({exc or type(exc).__name__}); is it "
                "running? (`sluice up`, or set SLUICE_API_URL)"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request(
            "GET", path, params={k: v for k, v in params.items() if v is not None}
        )

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, json=body)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self.request("PUT", path, json=body)
