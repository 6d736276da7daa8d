"""Plain-text tables for the CLI: a header, aligned columns, one line per row, and
a sentence instead of an empty table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import click

# The last column (an error, usually) is cut here: a table row stays one line.
LAST_COLUMN_WIDTH = 80


def one_line(text: Any, width: int = LAST_COLUMN_WIDTH) -> str:
    """`text` on one line: its first non-empty line, cut to `width` characters."""
    if text is None:
        return "-"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(lines) > 1 or len(first) > width:
        return first[: width - 1].rstrip() + "…"
    return first or "-"


def when(value: str | None) -> str:
    """An API timestamp as local time, to the second."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def echo_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    empty: str,
    numeric: Iterable[int] = (),
) -> None:
    """Print `rows` under `headers` (columns in `numeric` aligned right), or `empty`."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    if not cells:
        click.echo(empty)
        return
    right = set(numeric)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            if i == len(values) - 1 and i not in right:
                parts.append(value)  # the last column is not padded
            else:
                parts.append(value.rjust(widths[i]) if i in right else value.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    click.echo(line([h.upper() for h in headers]))
    for row in cells:
        click.echo(line(row))
