"""Settings from `SLUICE_*` environment variables.

Each area declares its own frozen dataclass of settings with `setting(...)`
fields; `load(cls)` reads them from the environment and `describe(cls)` lists
them (for `--help` and the README). Command-line flags override by passing
keyword arguments to `load`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {value!r}")


def parse_prepare(value: str) -> bool:
    """SLUICE_DB_PREPARE: a boolean, or `auto` (the same as on: see CoreSettings)."""
    return True if value.strip().lower() == "auto" else parse_bool(value)


def parse_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def setting(env: str, default: Any, doc: str, parse: Callable[[str], Any] = str) -> Any:
    """A settings field read from the environment variable `env`."""
    return dataclasses.field(default=default, metadata={"env": env, "doc": doc, "parse": parse})


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build `cls` from the environment; keyword arguments that are not None win."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if overrides.get(f.name) is not None:
            values[f.name] = overrides[f.name]
            continue
        env = f.metadata.get("env")
        if env and env in environ:
            try:
                values[f.name] = f.metadata["parse"](environ[env])
            except ValueError as exc:
                raise SettingsError(f"{env}: {exc}") from None
    return cls(**values)


def describe(cls: type) -> Iterator[tuple[str, Any, str]]:
    """(variable, default, description) for every setting of `cls`."""
    for f in dataclasses.fields(cls):
        if "env" in f.metadata:
            yield f.metadata["env"], f.default, f.metadata["doc"]


@dataclasses.dataclass(frozen=True)
class CoreSettings:
    """Settings every Sluice process shares."""

    database_url: str | None = setting(
        "SLUICE_DATABASE_URL",
        None,
        "PostgreSQL URL (postgresql://user:pass@host:5432/db). Unset: `sluice up` and the "
        "bench start an embedded PostgreSQL instead.",
    )
    log_format: str = setting("SLUICE_LOG_FORMAT", "plain", "Log format: `plain` or `json`.")
    log_level: str = setting("SLUICE_LOG_LEVEL", "INFO", "Log level (DEBUG, INFO, WARNING...).")
    db_prepare: bool = setting(
        "SLUICE_DB_PREPARE",
        True,
        "Use server-side prepared statements where they survive: on (1 or auto, the "
        "default), they turn themselves off when a pooler is seen losing them (PgBouncer "
        "before 1.21 in transaction mode, or without max_prepared_statements); 0: never.",
        parse_prepare,
    )
    listen_url: str | None = setting(
        "SLUICE_LISTEN_URL",
        None,
        "PostgreSQL URL for LISTEN (worker wake-ups; the API's notification self-test). "
        "Default: SLUICE_DATABASE_URL. Behind PgBouncer in transaction mode, point it "
        "straight at the primary: the pooler loses notifications.",
    )
    read_database_url: str | None = setting(
        "SLUICE_READ_DATABASE_URL",
        None,
        "PostgreSQL URL for reads that tolerate replication lag (dashboard, /metrics queue "
        "depths), e.g. a hot standby. Default: SLUICE_DATABASE_URL. See docs/scaling.md.",
    )
