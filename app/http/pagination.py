"""Keyset pagination: a list answers `{"items": [...], "next_cursor": ...}`, and
the cursor (opaque to clients) carries the sort key of the last item shown, so
each page is an index range scan however deep the client pages."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from litestar.params import QueryParameter

from sluice.http.errors import invalid
from sluice.http.shapes import BIGINT_MAX

T = TypeVar("T")

MAX_LIMIT = 1000


Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Most items per page.")]
Cursor = Annotated[
    str | None,
    QueryParameter(
        description="`next_cursor` of the previous page; omit for the first page.", max_length=200
    ),
]


class Page(msgspec.Struct, Generic[T]):
    """One page of a list; pass `next_cursor` back to get the next (null: no more)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(key: int | str | tuple[str, ...]) -> str:
    """An opaque cursor carrying the sort key `key` (an id, a name, or a tuple of names)."""
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: Any = int) -> Any:
    """The sort key a cursor carries, or a 422 naming `cursor` when it is not one of ours."""
    if cursor is None:
        return None
    try:
        key = msgspec.json.decode(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), type=kind, strict=True
        )
        if kind is int and not 0 < key <= BIGINT_MAX:
            raise ValueError(key)
        # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the query.
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(part, str) and "\x00" in part for part in parts):
            raise ValueError(key)
    except (ValueError, binascii.Error, msgspec.DecodeError):
        raise invalid([("cursor", "is not a cursor this API returned")]) from None
    return key


def page(items: list[T], limit: int, key: str | tuple[str, ...] = "id") -> Page[T]:
    """A page of `items` (fetched with limit + 1 to learn whether more follow);
    the cursor carries the last item's `key` attribute (or attributes)."""
    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    items = items[:limit]
    last = items[-1]
    value = tuple(getattr(last, k) for k in key) if isinstance(key, tuple) else getattr(last, key)
    return Page(items=items, next_cursor=encode_cursor(value))
