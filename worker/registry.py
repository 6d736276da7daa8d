"""Task handlers by name: the built-ins and the user's, registered with `@task`.

A handler is any function, sync or async, taking `(payload)` or
`(payload, ctx)`. Async handlers run on the worker's event loop; sync ones run
in its thread pool, so a blocking call in them does not stall other jobs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler and how to call it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    takes_context: bool

    def call(self, payload: Any, ctx: Any) -> Any:
        """Call the handler (an awaitable when it is async)."""
        return self.fn(payload, ctx) if self.takes_context else self.fn(payload)


def _takes_context(fn: Callable[..., Any]) -> bool:
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if not params:
        raise TypeError(f"handler {fn.__qualname__} must take the payload as its first argument")
    return len(params) >= 2 or params[0].kind is inspect.Parameter.VAR_POSITIONAL


def _origin(fn: Callable[..., Any]) -> tuple[str, str]:
    return fn.__module__, fn.__qualname__


class Registry:
    """Handlers by task name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, fn: Callable[..., Any]) -> Handler:
        """Register `fn` as the handler of task `name`."""
        existing = self._handlers.get(name)
        # The same function imported twice (a module reloaded) is not a conflict.
        if existing is not None and _origin(existing.fn) != _origin(fn):
            raise ValueError(
                f"task {name!r} is already registered by "
                f"{existing.fn.__module__}.{existing.fn.__qualname__}"
            )
        handler = Handler(name, fn, inspect.iscoroutinefunction(fn), _takes_context(fn))
        self._handlers[name] = handler
        return handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def import_modules(self, modules: Iterable[str]) -> None:
        """Import the built-in handlers and `modules`, whose `@task`s register themselves.

        The user's modules are found from the current directory, as Celery does,
        so `SLUICE_TASK_MODULES=app.tasks sluice worker` works in a project
        without PYTHONPATH (the `sluice` script's own directory comes first in
        sys.path otherwise).
        """
        importlib.import_module("sluice.worker.handlers")
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ImportError(f"SLUICE_TASK_MODULES: cannot import {module!r}: {exc}") from exc


REGISTRY = Registry()


def task(fn: F | None = None, *, name: str | None = None) -> Any:
    """Register a function as a task handler: `@task` (named after the function)
    or `@task(name="reports.build")`."""

    def register(f: F) -> F:
        REGISTRY.register(name or f.__name__, f)
        return f

    if fn is not None:
        return register(fn)
    return register
