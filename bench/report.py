"""What every benchmark reports: named figures, each beside its baseline and anchor from the same run.

A `Figure` is one measured number (`ours`) with what it is compared to: the
in-project `baseline` (the plain way, or the previous implementation) and the
`anchor` (what a researcher would pick instead, e.g. trackio or bm25s),
measured in the same process run so machine load hits both. `ratio` is the
figure the target is set on (how it is formed is in `target`), `met` whether
the target holds. `finish` prints the figures as a table and, with --json,
as one JSON line that `python -m bench` collects (the line starts with
JSON_MARK). Not a benchmark itself.
"""

import json
import math
from dataclasses import asdict, dataclass

JSON_MARK = "BENCH-JSON "


@dataclass
class Figure:
    name: str
    ours: float
    unit: str
    target: str  # e.g. "ratio <= 1.0" (ours / anchor) or "ours <= 10 s"
    met: bool
    baseline: float | None = None
    anchor: float | None = None
    ratio: float | None = None
    note: str = ""

    def as_json(self) -> dict:
        values = asdict(self)
        values.pop("name")
        return {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                for key, value in values.items()}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.inf


def number(value: float | None, unit: str = "") -> str:
    """A figure for the table: 3 significant digits, its unit."""
    if value is None or math.isnan(value):
        return "-"
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".rstrip()


def table(figures: list[Figure]) -> str:
    rows = [("figure", "ours", "baseline", "anchor", "ratio", "target", "met")]
    for figure in figures:
        rows.append((figure.name, number(figure.ours, figure.unit), number(figure.baseline, figure.unit),
                     number(figure.anchor, figure.unit), number(figure.ratio, "x" if figure.ratio is not None else ""),
                     figure.target, "yes" if figure.met else "NO"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def finish(figures: list[Figure], as_json: bool) -> int:
    """Print the figures (table, then the JSON line when asked); exit status 1 if a target is missed."""
    print(table(figures))
    for figure in figures:
        if figure.note:
            print(f"  {figure.name}: {figure.note}")
    if as_json:
        print(JSON_MARK + json.dumps({figure.name: figure.as_json() for figure in figures}))
    return 0 if all(figure.met for figure in figures) else 1
