"""Metadata values as plain data, so stage code can say what the UI shows without Dagster.

Stage functions return ordered ``{key: value}`` dicts of str/int/float/bool and `Markdown`
(charts as data-URI images, tables); `qpipe_dagster.defs.metadata` renders them for Dagster.
"""

from __future__ import annotations

import math

Plain = str | int | float  # what a stage puts in metadata (a bool is an int, Markdown a str)


class Markdown(str):
    """Text the UI renders as markdown rather than as a plain string."""


def plain(value: object) -> float | int | bool | str:
    """Dagster metadata takes str/int/float/bool; render anything else as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else "n/a"
    if isinstance(value, (bool, int, str)) or value is None:
        return value if value is not None else "none"
    return str(value)


def figure(value: object) -> float | str:
    """A number shown as a finite float, else "n/a" (missing, NaN, inf or not a number)."""
    return float(value) if isinstance(value, int | float) and math.isfinite(float(value)) else "n/a"


def markdown_table(rows: list[dict], columns: list[str]) -> Markdown:
    """A small markdown table (floats to 4 decimals; None, inf and NaN shown as n/a)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if math.isfinite(v) else "n/a"
        return "n/a" if v is None else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(cell(r.get(c)) for c in columns) + " |\n" for r in rows)
    return Markdown(head + body)
