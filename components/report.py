"""Render result tables as Markdown, numbers rounded for reading."""

from __future__ import annotations

import math

import pandas as pd


def cell(value: object) -> str:
    """A table cell: floats to 4 significant digits, large ones with thousands separators, NaN empty."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "not reached"
        return f"{value:,.0f}" if abs(value) >= 10000 else f"{value:.4g}"
    return str(value)


def markdown_table(frame: pd.DataFrame, columns: list[str] | None = None) -> str:
    """`columns` of `frame` (all by default) as a Markdown table."""
    columns = columns or list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines)
