"""The built-in tasks and their payloads, declared once.

The API checks a submitted payload against these declarations (`problems`), the
worker's built-in handlers decode the payload they run with them (`decode`), and
the OpenAPI document shows them (`payload_schemas`). A field added here is
accepted everywhere at once; `docs/worker.md` lists them (a test compares).

Task names other than the built-ins are accepted when they follow the name rule:
the handlers of SLUICE_TASK_MODULES live in the workers, and the API does not
import the workers' code to learn their names. A job whose task no worker knows
fails there (`no handler for task ...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from sluice.core.jobs import TASK_NAME
from sluice.core.problems import Problems, validation_problem

URL = r"^https?://[^\s]+$"
EMAIL = r"^[^@\s]+@[^@\s]+$"

# The largest result a built-in task keeps: a shell task's last line of stdout,
# an http task's response body (its default `max_body`). Past it the job fails
# with an error saying so; nothing is cut silently.
RESULT_LIMIT = 1024 * 1024
MAX_BODY_LIMIT = 16 * RESULT_LIMIT

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
StatusCode = Annotated[int, Meta(ge=100, le=599)]


class Payload(Struct, forbid_unknown_fields=True, frozen=True):
    """A built-in task's payload. Unknown fields are refused (a typo would
    otherwise be ignored without a word)."""

    def problems(self) -> Problems:
        """Rules across fields, as (field, message) pairs (fields relative to the payload)."""
        return []


class SleepPayload(Payload, frozen=True):
    """`sleep`: wait, holding a worker slot (tests, demos, pacing a DAG)."""

    seconds: Annotated[
        float, Meta(ge=0, le=7 * 86400, description="How long to wait (at most 7 days).")
    ]


class ShellPayload(Payload, frozen=True):
    """`shell`: run a command without a shell (needs SLUICE_ALLOW_SHELL=1 on the API
    and the workers, and an admin token). A non-zero exit fails the attempt; the
    tails of stdout and stderr go to the attempt log."""

    argv: Annotated[
        list[str], Meta(min_length=1, description="The program and its arguments, as is.")
    ]
    env: Annotated[
        dict[str, str],
        Meta(description="Variables added to the worker's environment (minus its SLUICE_*)."),
    ] = {}
    cwd: Annotated[str | None, Meta(description="Working directory.")] = None
    result: Annotated[
        Literal["exit_code", "last_line", "last_line_json"],
        Meta(
            description='The job\'s result: `exit_code` ({"exit_code": 0}), `last_line` (the '
            "last non-empty line of stdout, a string) or `last_line_json` (that line parsed "
            "as JSON). At most 1 MiB."
        ),
    ] = "exit_code"


class HttpPayload(Payload, frozen=True):
    """`http`: one request. Connection errors, 5xx, 408, 425 and 429 retry; any other
    status outside `expect` fails the job. Only addresses the outbound policy allows
    (SLUICE_OUTBOUND_ALLOW; public addresses by default)."""

    url: Annotated[str, Meta(pattern=URL, max_length=8192, description="http(s) URL.")]
    method: HttpMethod = "GET"
    headers: dict[str, str] = {}
    params: Annotated[
        dict[str, str | int | float | bool],
        Meta(description="Query parameters added to the URL's."),
    ] = {}
    json: Annotated[Any, Meta(description="A JSON request body (sets Content-Type).")] = UNSET
    body: Annotated[
        str | UnsetType, Meta(description="A text request body (instead of `json`).")
    ] = UNSET
    expect: Annotated[
        list[StatusCode] | None,
        Meta(description="Statuses that succeed (default: any 2xx)."),
    ] = None
    timeout: (
        Annotated[float, Meta(gt=0, description="Seconds for the request (default 60).")] | None
    ) = None
    follow_redirects: Annotated[
        bool,
        Meta(description="Follow redirects (at most 5), each checked against the policy."),
    ] = False
    result: Annotated[
        Literal["body", "status"],
        Meta(
            description='The job\'s result: `body` ({"status", "body"}: JSON when the '
            'response is JSON, else text) or `status` ({"status"} only).'
        ),
    ] = "body"
    max_body: Annotated[
        int,
        Meta(
            ge=0,
            le=MAX_BODY_LIMIT,
            description="Largest response body kept, in bytes; a larger one fails the job.",
        ),
    ] = RESULT_LIMIT

    def problems(self) -> Problems:
        if self.json is not UNSET and self.body is not UNSET:
            return [("body", "give json or body, not both")]
        return []


class EmailPayload(Payload, frozen=True):
    """`email`: a plain-text mail through SLUICE_SMTP_URL."""

    to: Annotated[list[Annotated[str, Meta(pattern=EMAIL)]], Meta(min_length=1)]
    subject: Annotated[str, Meta(pattern=r"^[^\r\n]*$", description="One line.")]
    body: str = ""


class WebhookPayload(Payload, frozen=True):
    """`webhook`: a notification delivery, enqueued by Sluice itself (`notify`): the
    event as JSON, signed with the secret (sluice.core.webhooks). Within the
    outbound policy, like `http`."""

    url: Annotated[str, Meta(pattern=URL, max_length=8192)]
    event: dict[str, Any]
    secret: str | None = None


# Every built-in task; `noop` takes anything (and ignores it).
BUILTIN_PAYLOADS: dict[str, type[Payload] | None] = {
    "noop": None,
    "sleep": SleepPayload,
    "shell": ShellPayload,
    "http": HttpPayload,
    "email": EmailPayload,
    "webhook": WebhookPayload,
}

P = TypeVar("P", bound=Payload)


class PayloadError(ValueError):
    """A payload that does not fit its task; `problems` name the fields."""

    def __init__(self, problems: Problems) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


def _convert(payload: Any, model: type[P], where: str) -> tuple[P | None, Problems]:
    try:
        value = msgspec.convert(payload, model)
    except msgspec.ValidationError as exc:
        return None, [validation_problem(exc, where)]
    return value, [(f"{where}.{field}", message) for field, message in value.problems()]


def payload_problems(task: str, payload: Any, where: str = "payload") -> Problems:
    """What is wrong with `payload` for `task` ([] when it fits, or when the task is
    not a built-in). `where` is the payload's path in the request (`nodes[3].payload`)."""
    model = BUILTIN_PAYLOADS.get(task)
    return [] if model is None else _convert(payload, model, where)[1]


def decode(payload: Any, model: type[P]) -> P:
    """`payload` as the built-in payload `model`, or PayloadError naming the fields
    (`payload.seconds`)."""
    value, problems = _convert(payload, model, "payload")
    if problems:
        raise PayloadError(problems)
    assert value is not None
    return value


def payload_schemas() -> dict[str, Any]:
    """JSON Schema of every built-in payload, by component name (`SleepPayload`),
    with references under `#/components/schemas/` as in an OpenAPI document."""
    models = [m for m in BUILTIN_PAYLOADS.values() if m is not None]
    _, components = msgspec.json.schema_components(
        models, ref_template="#/components/schemas/{name}"
    )
    return components


@dataclass(frozen=True)
class TaskCatalog:
    """What the API accepts as a job's task and payload: any well-formed name; the
    built-ins' payloads checked field by field; `shell` only where it is allowed."""

    allow_shell: bool

    def task_problems(self, task: Any, where: str) -> Problems:
        """Why `task` cannot be submitted here ([] when it can)."""
        if not isinstance(task, str) or not TASK_NAME.match(task):
            return [(where, "must be a task name: a letter or _, then letters, digits, _ . : -")]
        if task == "shell" and not self.allow_shell:
            return [(where, "shell tasks are disabled on this server (SLUICE_ALLOW_SHELL=1)")]
        return []

    def problems(self, task: Any, payload: Any, where: str = "") -> Problems:
        """Everything wrong with a (task, payload) pair, with fields under `where`."""
        prefix = f"{where}." if where else ""
        found = self.task_problems(task, prefix + "task")
        if not found:
            found = payload_problems(task, payload, prefix + "payload")
        return found
