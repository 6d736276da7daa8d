"""A task function's signature as data: what its payload must hold, where its
context goes, what its return value reads back as.

Two forms of handler, told apart by the name of the first parameter:

* **fields** (the default): the payload's fields are the function's keyword
  arguments, checked against their annotations (msgspec: builtins, datetimes,
  UUIDs, Decimals, dataclasses, Structs, TypedDicts, Literals...):
  `def add(a: int, b: int = 0) -> int`. A parameter annotated with the context
  type (`sluice.JobContext`) receives the context instead; `**kwargs` takes the
  fields no parameter names (without it, an unknown field is refused).
* **payload**: the first parameter is called `payload` and receives the whole
  payload (Sluice's first form, `def build(payload, ctx)`); a second positional
  parameter receives the context. The payload is checked against the
  annotation of `payload` when it has one more precise than `Any`/`dict`.

The same check runs when a job is enqueued from Python (the arguments are
encoded to JSON and decoded back, exactly as the worker will decode them) and
when it runs (a payload written by SQL or REST that does not fit fails the job
without retry, naming the field). Return values are turned into JSON the same
way (msgspec), and read back into the return annotation by a job handle.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_origin, get_type_hints

import msgspec

from sluice.core.problems import validation_problem

Form = Literal["fields", "payload"]

# Annotations of a whole payload that ask for no check (any JSON object will do).
_UNCHECKED = (Any, object, dict, Mapping, inspect.Parameter.empty)


class PayloadMismatch(ValueError):
    """The payload does not fit the task's parameters; `field` names where
    (`payload.a`), `problem` says what."""

    def __init__(self, task: str, field: str, problem: str) -> None:
        super().__init__(f"the payload does not fit task {task!r}: {field}: {problem}")
        self.task = task
        self.field = field
        self.problem = problem


class Signature:
    """How to call a task function with a job's payload, and read its result."""

    __slots__ = (
        "_empty",
        "context",
        "extra",
        "fields",
        "form",
        "name",
        "payload_type",
        "return_type",
    )

    def __init__(self, fn: Callable[..., Any], name: str, context_type: type | None) -> None:
        self.name = name
        self._empty: bytes | None = None
        params = list(inspect.signature(fn).parameters.values())
        hints = _hints(fn, context_type)
        self.return_type: Any = hints.get("return", Any)
        #: The parameter that receives the context (fields form), or None.
        self.context: str | None = None
        #: True when the function takes `**kwargs` (unknown fields are passed on).
        self.extra = False
        self.fields: tuple[str, ...] = ()
        self.payload_type: Any = None
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if positional and positional[0].name == "payload":
            self.form: Form = "payload"
            self.context = "" if len(positional) > 1 or _var_positional(params) else None
            hint = hints.get("payload", inspect.Parameter.empty)
            if hint not in _UNCHECKED and get_origin(hint) not in (dict, Mapping):
                self.payload_type = hint
            self._empty = self._empty_payload()
            return
        self.form = "fields"
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for p in params:
            hint = hints.get(p.name, Any)
            if context_type is not None and hint is context_type:
                self.context = p.name
            elif p.kind is p.VAR_KEYWORD:
                self.extra = True
            elif p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL):
                raise TypeError(
                    f"task {name!r}: parameter {p.name!r} cannot be given by keyword; a task "
                    "takes its payload's fields as keyword arguments (or the whole payload as "
                    "a first parameter named `payload`)"
                )
            elif p.default is p.empty:
                fields.append((p.name, hint))
            else:
                fields.append((p.name, hint, p.default))
        self.fields = tuple(f[0] for f in fields)
        # Untracked by the garbage collector (gc=False): an instance only carries
        # decoded values to their keyword arguments and is never seen by user code,
        # so it can be in no reference cycle; tracked, the 10,000 of an
        # enqueue_many check set off collections that doubled the client's CPU.
        self.payload_type = msgspec.defstruct(
            f"{name}.payload",
            fields,
            kw_only=True,
            forbid_unknown_fields=not self.extra,
            gc=False,
        )
        self._empty = self._empty_payload()

    def _empty_payload(self) -> bytes | None:
        """`{}` when the worker takes it (no required field), checked once here: the
        payload of every call without arguments (None: such a call is refused)."""
        try:
            return self.encode({})
        except PayloadMismatch:
            return None

    # --- the payload ----------------------------------------------------------

    def encode(self, fields: Mapping[str, Any]) -> bytes:
        """The payload of a call with these fields, as JSON; raises PayloadMismatch
        when the worker would refuse it (decoded back here the way it will be there)."""
        if self._empty is not None and type(fields) is dict and not fields:
            return self._empty
        try:
            encoded = msgspec.json.encode(fields)
        except (TypeError, ValueError) as exc:  # msgspec's message names the type
            raise PayloadMismatch(self.name, "payload", str(exc)) from None
        if self.payload_type is not None:
            try:
                msgspec.json.decode(encoded, type=self.payload_type)
            except msgspec.ValidationError as exc:
                raise PayloadMismatch(self.name, *validation_problem(exc, "payload")) from None
        return encoded

    def encode_many(self, items: list[Mapping[str, Any]]) -> list[bytes]:
        """encode() of each item, their check made by one decode of them all (a
        decode per item was a third of the client's CPU in enqueue_many); when one
        does not fit, the first that does not raises as encode() does."""
        if self.payload_type is None:
            return [self.encode(item) for item in items]
        encode = msgspec.json.encode
        try:
            encoded = [encode(item) for item in items]
            msgspec.json.decode(b"[" + b",".join(encoded) + b"]", type=list[self.payload_type])
        except (TypeError, ValueError):  # msgspec.ValidationError is a ValueError
            for item in items:
                self.encode(item)
            raise
        return encoded

    def arguments(self, payload: Any) -> Any:
        """The payload as the function takes it: keyword arguments (fields form) or
        one value (payload form); raises PayloadMismatch when it does not fit."""
        if self.form == "payload":
            if self.payload_type is None:
                return payload
            return self._convert(payload)
        if not isinstance(payload, dict):
            raise PayloadMismatch(
                self.name, "payload", f"Expected `object`, got `{_json_type(payload)}`"
            )
        decoded = self._convert(payload)
        kwargs = {f: getattr(decoded, f) for f in self.fields}
        if self.extra:
            for key, value in payload.items():
                if key not in kwargs:
                    kwargs[key] = value
        return kwargs

    def _convert(self, payload: Any) -> Any:
        try:
            return msgspec.convert(payload, self.payload_type)
        except msgspec.ValidationError as exc:
            raise PayloadMismatch(self.name, *validation_problem(exc, "payload")) from None

    # --- the result -----------------------------------------------------------

    @staticmethod
    def result_json(value: Any) -> Any:
        """A return value as JSON-ready builtins (Structs, dataclasses, datetimes...
        become objects and strings, as in a payload). Raises TypeError for a value
        msgspec cannot encode."""
        return msgspec.to_builtins(value)

    def read_result(self, value: Any) -> Any:
        """A stored result read back into the return annotation (as is without one)."""
        if self.return_type is Any or value is None:
            return value
        return msgspec.convert(value, self.return_type)


def _hints(fn: Callable[..., Any], context_type: type | None) -> dict[str, Any]:
    """The function's annotations, resolved. One that cannot be resolved (a name
    imported under `if TYPE_CHECKING:`) reads as Any, except the context's, which
    is recognised by its name: such a handler still gets its context."""
    with contextlib.suppress(Exception):  # any failure: resolve them one by one
        return get_type_hints(fn)
    hints: dict[str, Any] = {}
    namespace = getattr(fn, "__globals__", {})
    for key, annotation in getattr(fn, "__annotations__", {}).items():
        if not isinstance(annotation, str):
            hints[key] = annotation
            continue
        try:
            hints[key] = eval(annotation, namespace)  # noqa: S307 - the function's own annotation
        except Exception:
            named = context_type is not None and annotation.split(".")[-1] == context_type.__name__
            hints[key] = context_type if named else Any
    return hints


def _var_positional(params: list[inspect.Parameter]) -> bool:
    return any(p.kind is p.VAR_POSITIONAL for p in params)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "str"
    if value is None:
        return "null"
    return type(value).__name__
