"""Figures to files: the JSON record, the markdown table and the PNG charts."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import Record

# -- statistics ---------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; values need not be sorted."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- files ---------------------------------------------------------------------


def stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def write(record: Record, context: dict[str, Any], out: Path, name: str | None = None) -> dict:
    """Write `<name>.json`, `<name>.md` and its charts into `out`; returns the JSON record."""
    out.mkdir(parents=True, exist_ok=True)
    name = name or f"{record.scenario}-{stamp()}"
    files: dict[str, Any] = {"json": str(out / f"{name}.json"), "markdown": str(out / f"{name}.md")}
    charts = []
    for chart, draw in record.charts.items():
        path = out / f"{name}-{chart}.png"
        if draw_png(draw, path):
            charts.append(str(path))
    files["charts"] = charts
    document = as_json(record, context, files)
    Path(files["json"]).write_text(json.dumps(document, indent=2, default=str) + "\n")
    Path(files["markdown"]).write_text(markdown(record, context))
    return document


def as_json(record: Record, context: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    return {
        "scenario": record.scenario,
        "figures": record.figures,
        "labels": record.labels,
        "checks": record.checks,
        "options": record.options,
        "details": record.details,
        "notes": record.notes,
        **context,
        "files": files,
    }


def markdown(record: Record, context: dict[str, Any]) -> str:
    """The record as a markdown table, with its conditions underneath."""
    lines = [f"## {record.scenario}", ""]
    if "table" in record.details:
        lines += combined_table(record.details["settings"], record.details["table"])
    else:
        lines += ["| figure | value |", "|---|---:|"]
        for key, value in record.figures.items():
            lines.append(f"| {record.labels.get(key, key)} | {fmt(value)} |")
    for key, value in record.checks.items():
        lines.append(f"| {key} | {value} |")
    lines.append("")
    lines += [f"- {note}" for note in record.notes]
    lines.append(conditions(context))
    return "\n".join(lines) + "\n"


def combined_table(settings: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """`all`'s table: a column of values and one of fractions of `limit` per
    server settings run, then the targets each figure is held to."""
    head = "| figure |" + "".join(f" {s} | of limit |" for s in settings) + " targets |"
    lines = [head, "|---|" + "---:|---:|" * len(settings) + "---|"]
    for row in rows:
        cells = []
        for s in settings:
            value, share = row["values"].get(s), row["of_limit"].get(s)
            cells.append("" if value is None else fmt(value))
            cells.append("" if share is None else f"{share:.0%}")
        verdicts = {True: "met", False: "**missed**", None: "not measured"}
        targets = "; ".join(
            f"{t['settings']}: {t['target']}: {verdicts[t['met']]}" for t in row["targets"]
        )
        lines.append(f"| {row['figure']} | " + " | ".join(cells) + f" | {targets} |")
    return lines


def conditions(context: dict[str, Any]) -> str:
    m, v = context["machine"], context["versions"]
    load = ", ".join(f"{x:.2f}" for x in m["load_average"])
    commit = v["sluice"].get("commit") or "?"
    return (
        f"\n_{m['cores']} cores, {m['cpu_model']}, {(m['memory_bytes'] or 0) / 2**30:.0f} GiB; "
        f"load average at start {load}; PostgreSQL {v['postgresql']} ({context['database']}, "
        f"{context.get('settings', 'default')} settings); "
        f"Python {v['python']}; sluice {v['sluice'].get('version')} @ {commit}"
        f"{' (dirty)' if v['sluice'].get('dirty') else ''}; {context['started_at']}_\n"
    )


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def draw_png(draw: Callable[[Any], None], path: Path) -> bool:
    """Draw one chart; False (no file) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    draw(figure)
    figure.savefig(path)
    return True


def line_chart(
    title: str, series: dict[str, list[list[float]]], xlabel: str, ylabel: str
) -> Callable[[Any], None]:
    """A chart of one or more [[x, y], ...] series."""

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        for label, points in series.items():
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()

    return draw


def histogram(title: str, values: dict[str, Sequence[float]], xlabel: str) -> Callable:
    """A histogram of latencies (clipped at the 99.5th percentile so the body shows)."""

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        for label, data in values.items():
            if data:
                top = percentile(data, 99.5)
                ax.hist([min(x, top) for x in data], bins=60, alpha=0.6, label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("jobs")
        ax.grid(alpha=0.3)
        if len(values) > 1:
            ax.legend()

    return draw
