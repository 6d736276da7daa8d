"""Which tasks the API accepts, and whether a payload fits its task.

Built-in tasks have known payloads (the SPEC's task table) and are checked
field by field. Tasks that Python modules register on the workers cannot be
seen from the API process, so they are accepted by name: list them in
SLUICE_KNOWN_TASKS (or `*` for any well-formed name) and their payloads are
passed through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from sluice.core.jobs import TASK_NAME
from sluice.core.problems import named_field

URL = r"^https?://[^\s]+$"
EMAIL = r"^[^@\s]+@[^@\s]+$"

Problems = list[tuple[str, str]]


class _Payload(Struct, forbid_unknown_fields=True):
    pass


class SleepPayload(_Payload):
    seconds: Annotated[float, Meta(ge=0, le=7 * 86400)]


class ShellPayload(_Payload):
    argv: Annotated[list[str], Meta(min_length=1)]
    env: dict[str, str] = {}
    cwd: str | None = None


class HttpPayload(_Payload):
    url: Annotated[str, Meta(pattern=URL)]
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] | UnsetType = UNSET
    headers: dict[str, str] = {}
    json: Any = UNSET
    expect: list[Annotated[int, Meta(ge=100, le=599)]] | UnsetType = UNSET
    timeout: Annotated[float, Meta(gt=0)] | UnsetType = UNSET


class EmailPayload(_Payload):
    to: Annotated[list[Annotated[str, Meta(pattern=EMAIL)]], Meta(min_length=1)]
    subject: str
    body: str


class WebhookPayload(_Payload):
    url: Annotated[str, Meta(pattern=URL)]
    event: dict[str, Any]
    secret: str | None = None


BUILTIN_PAYLOADS: dict[str, type[Struct] | None] = {
    "noop": None,  # anything, ignored
    "sleep": SleepPayload,
    "shell": ShellPayload,
    "http": HttpPayload,
    "email": EmailPayload,
    "webhook": WebhookPayload,
}

_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)


def payload_problems(task: str, payload: Any, where: str) -> Problems:
    """What is wrong with `payload` for the built-in `task` ([] when it fits).

    `where` is the payload's path in the request, e.g. `nodes[3].payload`.
    """
    model = BUILTIN_PAYLOADS.get(task)
    if model is None:
        return []
    try:
        msgspec.convert(payload, model)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        assert match is not None
        message, path = match.group(1), match.group(2) or ""
        if named := named_field(message):
            field, message = named
            path = f"{path}.{field}"
        return [(where + path, message)]
    return []


@dataclass(frozen=True)
class TaskCatalog:
    """The task names this API accepts."""

    known: frozenset[str]
    allow_shell: bool
    any_name: bool = False

    @classmethod
    def from_settings(
        cls, known: Iterable[str], allow_shell: bool, modules: Iterable[str] = ()
    ) -> TaskCatalog:
        """Built-ins, `known` names, and the handlers the worker registry gets from
        importing `modules` (SLUICE_TASK_MODULES), the same way workers do."""
        names = set(known)
        if modules:
            from sluice.worker.registry import REGISTRY

            REGISTRY.import_modules(modules)
            names.update(REGISTRY.names())
        return cls(frozenset(names - {"*"}), allow_shell, "*" in names)

    def task_problems(self, task: Any, where: str) -> Problems:
        """Why `task` cannot be submitted here ([] when it can)."""
        if not isinstance(task, str) or not TASK_NAME.match(task):
            return [(where, "must be a task name: a letter or _, then letters, digits, _ . : -")]
        if task == "shell" and not self.allow_shell:
            return [(where, "shell tasks are disabled on this server (SLUICE_ALLOW_SHELL=1)")]
        if task in BUILTIN_PAYLOADS or task in self.known or self.any_name:
            return []
        return [
            (
                where,
                f"unknown task {task!r}: not a built-in, nor a handler of SLUICE_TASK_MODULES, "
                "nor in SLUICE_KNOWN_TASKS",
            )
        ]

    def problems(self, task: Any, payload: Any, where: str = "") -> Problems:
        """Everything wrong with a (task, payload) pair, with fields under `where`."""
        prefix = f"{where}." if where else ""
        found = self.task_problems(task, prefix + "task")
        if not found:
            found = payload_problems(task, payload, prefix + "payload")
        return found
