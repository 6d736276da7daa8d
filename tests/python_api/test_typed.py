"""How a task function's signature is read (sluice.core.typed) and how the
worker calls it (sluice.worker.registry.Handler), without a database."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

import sluice
from sluice.core.typed import PayloadMismatch, Signature
from sluice.worker.context import JobContext, NonRetryableError, TaskError
from sluice.worker.registry import PayloadError, Registry
from tests.python_api import checking_only
from tests.python_api.tasks import Summary, extra, measure


def test_the_two_forms_are_told_apart_by_the_first_parameters_name():
    def whole(payload, ctx): ...
    def alone(payload): ...
    def fields(a: int, ctx: JobContext, b: str = "x"): ...
    def keyword_context(a: int, *, context: JobContext): ...

    assert (Signature(whole, "w", JobContext).form, Signature(whole, "w", JobContext).context) == (
        "payload",
        "",
    )
    assert Signature(alone, "a", JobContext).context is None
    sig = Signature(fields, "f", JobContext)
    assert (sig.form, sig.fields, sig.context) == ("fields", ("a", "b"), "ctx")
    assert Signature(keyword_context, "k", JobContext).context == "context"


def test_positional_only_parameters_are_refused_at_declaration():
    def bad(a: int, /, b: int): ...

    with pytest.raises(TypeError, match="cannot be given by keyword"):
        Signature(bad, "bad", JobContext)


def test_annotations_imported_for_type_checkers_only_still_work():
    assert checking_only.one.signature.context == "ctx"
    assert checking_only.one.signature.fields == ("a", "price")
    assert checking_only.two.signature.form == "payload"


def test_a_handler_gets_fields_context_and_extra_fields():
    registry = Registry()
    handler = registry.register("py.extra", extra.fn, extra.signature)
    assert handler.call({"a": 1, "z": [2]}, None) == {"a": 1, "rest": {"z": [2]}}
    seen = {}

    def keep(a: int, ctx: JobContext) -> None:
        seen.update(a=a, ctx=ctx)

    registry.register("keep", keep).call({"a": 5}, "the context")
    assert seen == {"a": 5, "ctx": "the context"}


def test_a_misfit_payload_is_a_non_retryable_error_without_source_location():
    registry = Registry()
    handler = registry.register("py.measure", measure.fn, measure.signature)
    with pytest.raises(PayloadError) as raised:
        asyncio.run(handler.call({"box": {"low": {"x": 0, "y": 0}}, "at": "x"}, None))
    assert isinstance(raised.value, NonRetryableError) and isinstance(raised.value, TaskError)
    assert str(raised.value) == (
        "the payload does not fit task 'py.measure': payload.box.high: is required"
    )
    with pytest.raises(PayloadError, match=r"Expected `object`, got `array`"):
        asyncio.run(handler.call([1, 2], None))


def test_results_become_json_and_read_back_typed():
    registry = Registry()

    async def make(ctx: JobContext) -> Summary:
        return Summary(area=1.5, label="l", at="2026-01-01T00:00:00Z", job_id=3)  # type: ignore[arg-type]

    handler = registry.register("make", make)
    result = asyncio.run(handler.call({}, None))
    assert result == {"area": 1.5, "label": "l", "at": "2026-01-01T00:00:00Z", "job_id": 3}
    sig = Signature(make, "make", JobContext)
    assert isinstance(sig.read_result(result), Summary)

    def weird() -> Any:
        return object()

    with pytest.raises(NonRetryableError, match="not JSON"):
        registry.register("weird", weird).call({}, None)


class Order(msgspec.Struct):
    id: int


def test_payload_form_with_a_precise_annotation_is_checked():
    def handle(payload: Order) -> int:
        return payload.id

    sig = Signature(handle, "h", JobContext)
    assert sig.arguments({"id": 4}) == Order(4)
    with pytest.raises(PayloadMismatch, match=r"payload\.id"):
        sig.arguments({"id": "four"})


def test_the_task_object_is_still_the_function():
    @sluice.task(name="py.plain")
    async def plain(a: int) -> int:
        return a * 2

    assert isinstance(plain, sluice.Task) and plain.__name__ == "plain"
    assert asyncio.run(plain(a=21)) == 42
