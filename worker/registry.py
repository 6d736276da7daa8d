"""Task handlers by name: the built-ins and the user's, registered with `@task`.

A handler is any function, sync or async. It takes the payload's fields as
keyword arguments (`def add(a: int, b: int) -> int`, checked against the
annotations; a parameter annotated `JobContext` gets the context), or, when its
first parameter is called `payload`, the whole payload and optionally the
context (`def build(payload, ctx)`): see sluice.core.typed. Async handlers run
on the worker's event loop; sync ones run in its thread pool, so a blocking
call in them does not stall other jobs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sluice.core.enqueueing import Task, declare
from sluice.core.typed import PayloadMismatch, Signature
from sluice.worker.context import JobContext, NonRetryableError, TaskError

F = TypeVar("F", bound=Callable[..., Any])


class PayloadError(NonRetryableError, TaskError):
    """The job's payload does not fit its handler's parameters: the job fails at
    once (a retry would get the same payload), its error naming the field."""


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler and how to call it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    signature: Signature

    @property
    def takes_context(self) -> bool:
        return self.signature.context is not None

    def call(self, payload: Any, ctx: Any) -> Any:
        """Call the handler with the job's payload (an awaitable when it is async);
        its return value comes back as JSON-ready builtins. Raises PayloadError
        when the payload does not fit."""
        sig = self.signature
        try:
            args = sig.arguments(payload)
        except PayloadMismatch as exc:
            raise PayloadError(str(exc)) from None
        if sig.form == "payload":
            returned = self.fn(args, ctx) if sig.context is not None else self.fn(args)
        else:
            if sig.context is not None:
                args[sig.context] = ctx
            returned = self.fn(**args)
        if self.is_async:
            return _encoded_later(returned)
        return _encoded(returned)


def _encoded(value: Any) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
    try:
        return Signature.result_json(value)
    except (TypeError, ValueError) as exc:
        raise NonRetryableError(f"the handler's result is not JSON: {exc}") from None


async def _encoded_later(returned: Any) -> Any:
    return _encoded(await returned)


def _origin(fn: Callable[..., Any]) -> tuple[str, str]:
    return fn.__module__, fn.__qualname__


class Registry:
    """Handlers by task name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(
        self, name: str, fn: Callable[..., Any], signature: Signature | None = None
    ) -> Handler:
        """Register `fn` as the handler of task `name`."""
        existing = self._handlers.get(name)
        # The same function imported twice (a module reloaded) is not a conflict.
        if existing is not None and _origin(existing.fn) != _origin(fn):
            raise ValueError(
                f"task {name!r} is already registered by "
                f"{existing.fn.__module__}.{existing.fn.__qualname__}"
            )
        if signature is None:
            signature = Signature(fn, name, JobContext)
        handler = Handler(name, fn, inspect.iscoroutinefunction(fn), signature)
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


def task(
    fn: F | None = None,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout: Any = None,
    retry: Any = None,
) -> Any:
    """Declare and register a task: `@task` (named after the function) or
    `@task(name="reports.build", queue="reports", max_attempts=3, timeout="5m",
    retry=Retry(backoff="linear", base="10s"))`.

    Answers a `Task`: calling it calls the function, `enqueue(conn, **fields)` makes
    a job of it with these options as defaults (see sluice.core.enqueueing). The
    options apply to jobs enqueued from Python; a job inserted with SQL or REST
    carries its own settings."""

    def register(f: F) -> Task[Any]:
        declared = declare(
            f,
            name=name,
            context_type=JobContext,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            retry=retry,
        )
        REGISTRY.register(declared.name, f, declared.signature)
        return declared

    if fn is not None:
        return register(fn)
    return register
