"""Plotly charts for the Runs and Train tabs: a metric vs step, reward components, tool-call rate
(with the held-out tool-call rate and answer F1 beside it).

Charts are built from a `MetricSeriesCache` (already in memory), smoothed
with EMA and downsampled for display (cached per series), so drawing 50 runs
x 5,000 steps sends a bounded number of points to the browser. They are plain
Plotly JSON (`Chart`): plotly's figure objects validate every array they are
given, which cost ten times the rest of a redraw; the browser's plotly.js
reads the same JSON either way. Lines are SVG, not WebGL: a browser without a
GPU drew 50 WebGL runs in seconds.
"""

import textwrap
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.io as pio
from gradio.components.plot import PlotData
from plotly.colors import qualitative

from workbench.run_charts import COLLAPSE_FLOOR, LEARNING_NAMES, MetricSeriesCache, reward_components

PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Set2
BOTTOM_LEGEND = {"font": {"size": 10}, "orientation": "h", "yanchor": "top", "y": -0.3, "x": 0}
RAW_TRACES_UP_TO = 12  # above this many runs, draw only the smoothed lines
# Transparent backgrounds with neutral grids, so a chart sits on the page's own colour; dark mode recolours the
# text and grid lines through CSS (render.CSS), as Gradio does not theme Plotly figures.
BACKGROUND = {"paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)"}
AXIS = {"gridcolor": "rgba(127,127,127,0.25)", "zerolinecolor": "rgba(127,127,127,0.4)", "automargin": True}


@dataclass
class Chart:
    """A Plotly figure as its JSON parts: `data` (one dict per trace) and `layout`."""

    data: list[dict[str, Any]] = field(default_factory=list)
    layout: dict[str, Any] = field(default_factory=dict)

    def plot(self) -> PlotData:
        """What gr.Plot shows: the figure's JSON, serialised once and not re-validated."""
        return PlotData(type="plotly", plot=pio.to_json({"data": self.data, "layout": self.layout}, validate=False))


def display_values(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """Values rounded to `digits` significant digits of the largest, for drawing: metrics logged as float32
    (0.90000004) would otherwise give a flat line axis ticks like 0.9000001.

    >>> display_values(np.array([0.9000000357627869, 0.8999999761581421])).tolist()
    [0.9, 0.9]
    >>> display_values(np.array([1234.56789, float("nan")])).tolist()[0], display_values(np.array([0.0])).tolist()
    (1234.57, [0.0])
    """
    finite = np.abs(values[np.isfinite(values)])
    scale = finite.max() if finite.size else 0.0
    if not scale:
        return values
    return np.round(values, digits - 1 - int(np.floor(np.log10(scale))))


def _points_per_run(runs: int) -> int:
    """Points drawn per line: at most about 15,000 per chart, so a redraw stays quick in any browser; a few
    fixed levels, so adding a run to a selection rarely changes the others' (cached) lines.

    >>> [_points_per_run(n) for n in (1, 6, 7, 12, 13, 25, 26, 50)]
    [2400, 2400, 1200, 1200, 600, 600, 300, 300]
    """
    return next((level for level in (2400, 1200, 600) if level * runs <= 15_000), 300)


def empty_figure(message: str) -> Chart:
    """A blank chart saying why it is blank (wrapped: plotly does not wrap annotation text itself)."""
    note = {"text": "<br>".join(textwrap.wrap(message, 48)), "showarrow": False, "x": 0.5, "y": 0.5,
            "xref": "paper", "yref": "paper", "font": {"size": 14, "color": "#64748b"}}
    return Chart([], {"height": 260, "xaxis": {"visible": False}, "yaxis": {"visible": False},
                      "margin": {"l": 20, "r": 20, "t": 20, "b": 20}, "annotations": [note], **BACKGROUND})


def _lines(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str], name: str, smoothing: float,
           in_legend: set[str], axes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One smoothed line per run with data (behind it the faint raw line, for few runs).

    `in_legend` (shared by the panels of one chart) holds the runs already in the legend: each drawn run gets
    exactly one entry, in the first panel where it has data. `axes` places the lines in a panel."""
    lines = []
    limit = _points_per_run(len(run_ids))
    for position, run_id in enumerate(run_ids):
        series = cache.get(run_id, name)
        if not series:
            continue
        colour = PALETTE[position % len(PALETTE)]
        if smoothing > 0 and len(run_ids) <= RAW_TRACES_UP_TO:
            steps, values = series.display(0.0, limit)
            lines.append({"type": "scatter", "mode": "lines", "x": steps, "y": display_values(values),
                          "line": {"color": colour, "width": 1}, "opacity": 0.25, "legendgroup": run_id,
                          "showlegend": False, "hoverinfo": "skip", **(axes or {})})
        steps, values = series.display(smoothing, limit)
        lines.append({"type": "scatter", "mode": "lines", "x": steps, "y": display_values(values),
                      "name": labels.get(run_id, run_id), "legendgroup": run_id,
                      "showlegend": run_id not in in_legend, "line": {"color": colour, "width": 2},
                      **(axes or {})})
        in_legend.add(run_id)
    return lines


def _layout(title: str, height: int, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "height": height, "margin": {"l": 50, "r": 20, "t": 50, "b": 40},
            "hovermode": "closest", **BACKGROUND, **extra}


def metric_figure(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str], name: str | None,
                  smoothing: float, *, empty_message: str = "Select runs that logged metrics.") -> Chart:
    if not name:
        return empty_figure(empty_message)
    lines = _lines(cache, run_ids, labels, name, smoothing, set())
    if not lines:
        return empty_figure(f"No selected run logged {name!r}.")
    return Chart(lines, _layout(f"{name} (EMA {smoothing:.2f})", 380, legend={"font": {"size": 10}},
                                xaxis={"title": {"text": "step"}, **AXIS}, yaxis={"title": {"text": name}, **AXIS}))


def rewards_figure(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str],
                   smoothing: float) -> Chart:
    """One panel per reward component (at most six), stacked, sharing the step axis."""
    components = list(reward_components(cache.names(run_ids)).items())[:6]
    if not components:
        return empty_figure("No per-component rewards logged (rewards/<name>/mean).")
    rows, gap = len(components), 0.06
    panel = (1 - gap * (rows - 1)) / rows
    height = 170 * rows + 120
    layout = _layout(f"Reward components (EMA {smoothing:.2f})", height, margin={"l": 50, "r": 20, "t": 40, "b": 40},
                     legend={**BOTTOM_LEGEND, "y": -45 / (height - 80)}, annotations=[])  # legend under the panels
    data: list[dict[str, Any]] = []
    in_legend: set[str] = set()
    for row, (short, metric) in enumerate(components, start=1):
        top = 1 - (row - 1) * (panel + gap)
        suffix = "" if row == 1 else str(row)
        layout[f"xaxis{suffix}"] = {"anchor": f"y{suffix}", "showticklabels": row == rows, **AXIS,
                                    **({} if row == 1 else {"matches": "x"})}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", "domain": [top - panel, top], **AXIS}
        layout["annotations"].append({"text": short, "showarrow": False, "x": 0.5, "y": top, "xref": "paper",
                                      "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                                      "font": {"size": 14}})
        data += _lines(cache, run_ids, labels, metric, smoothing, in_legend,
                       axes={"xaxis": f"x{suffix}", "yaxis": f"y{suffix}"})
    return Chart(data, layout)


def tool_rate_figure(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str], name: str | None,
                     smoothing: float) -> Chart:
    """The training tool-call rate `name` and, for runs with a held-out evaluation, side by side on the same
    0..1 scale, the held-out tool-call rate on degraded images and the held-out answer F1 (LEARNING_NAMES):
    Visual-ARFT's story, the model learning when to call its tool and answering better for it."""
    present = set(cache.names(run_ids))
    held_out = [(metric, short) for metric, short in LEARNING_NAMES.items() if metric in present]
    if not name and not held_out:
        return empty_figure("No tool-call rate logged (tools/call_frequency).")
    floor = {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": COLLAPSE_FLOOR, "y1": COLLAPSE_FLOOR,
             "line": {"dash": "dot", "color": "#dc2626"}}
    label = {"text": "collapse threshold", "showarrow": False, "xref": "paper", "x": 0, "xanchor": "left",
             "y": COLLAPSE_FLOOR, "yanchor": "bottom"}
    lines = _lines(cache, run_ids, labels, name, smoothing, set()) if name else []
    if held_out:
        for line in lines:
            line["name"] = f"{line.get('name', '')} · {name} (train)"
        for number, (metric, short) in enumerate(held_out, start=1):
            dash = ("dash", "solid", "dashdot")[number % 3]
            for line in _lines(cache, run_ids, labels, metric, 0.0, set()):  # a few points: not smoothed
                if len(run_ids) == 1:  # one run: a colour per curve; more: a colour per run, a dash per curve
                    line["line"]["color"] = PALETTE[number]
                line["line"]["dash"] = dash
                line.update(mode="lines+markers", name=f"{line['name']} · {short}", legendgroup=f"{metric}")
                lines.append(line)
    title = f"Tool-call rate: {name}" if not held_out else "Tool use and held-out answer F1"
    return Chart(lines, _layout(title, 360, legend=BOTTOM_LEGEND, shapes=[floor], annotations=[label],
                                xaxis={"title": {"text": "step"}, **AXIS},
                                yaxis={"title": {"text": "rate / F1 (0..1)" if held_out else "calls per completion"},
                                       **AXIS}))
