"""Shapes shared by several API areas: names, ids, states and `notify`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar.params import PathParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from sluice.core.tasks import EMAIL, URL

BIGINT_MAX = 2**63 - 1

JobState = Literal["blocked", "scheduled", "ready", "running", "succeeded", "failed", "cancelled"]
RunState = Literal["running", "succeeded", "failed", "cancelled"]
Outcome = Literal["succeeded", "failed", "cancelled"]

# The same rules as the queues_name_valid and dags_name_valid constraints.
QueueName = Annotated[
    str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", examples=["default"])
]
DagName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$", examples=["etl"])]
JobId = Annotated[int, Meta(ge=1, le=BIGINT_MAX)]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]

# Path parameters: ids a bigint can hold, so a huge number is a 404, not a database error.
IdPath = Annotated[int, PathParameter(ge=1, le=BIGINT_MAX)]
NamePath = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]


class WebhookNotify(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """POST a signed JSON event to `url` when the job or run ends (in one of `on`)."""

    url: Annotated[str, Meta(pattern=URL, max_length=2048, examples=["https://example.com/hook"])]
    secret: Annotated[str, Meta(max_length=500, pattern=r"^[^\x00]*$")] | UnsetType = UNSET
    on: list[Outcome] | UnsetType = UNSET


class EmailNotify(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Mail `to` when the job or run ends (in one of `on`)."""

    to: Annotated[list[Annotated[str, Meta(pattern=EMAIL, max_length=320)]], Meta(min_length=1)]
    on: list[Outcome] | UnsetType = UNSET


class Notify(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Who to tell when a job or run ends; `on` defaults to every outcome."""

    webhook: WebhookNotify | UnsetType = UNSET
    email: EmailNotify | UnsetType = UNSET


def notify_json(notify: Notify | None) -> dict[str, Any] | None:
    """`notify` as stored (see sluice.notify_valid): unset fields left out."""
    return None if notify is None else msgspec.to_builtins(notify)


def nul_problems(value: Any, where: str) -> list[tuple[str, str]]:
    """Strings holding NUL characters, which PostgreSQL cannot store, inside JSON `value`."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append((path, "must not contain NUL characters"))
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    found.append((path, "keys must not contain NUL characters"))
                stack.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return found
