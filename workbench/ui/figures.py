"""Plotly figures for the Runs tab: a metric vs step, reward components, tool-call rate.

Figures are built from a `MetricSeriesCache` (already in memory), smoothed
with EMA and downsampled for display, so drawing 50 runs x 5,000 steps sends
a bounded number of points to the browser.
"""

import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from workbench.run_charts import COLLAPSE_FLOOR, MetricSeriesCache, downsample, reward_components

PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Set2
BOTTOM_LEGEND = {"font": {"size": 10}, "orientation": "h", "yanchor": "top", "y": -0.3, "x": 0}
RAW_TRACES_UP_TO = 12  # above this many runs, draw only the smoothed lines
# Transparent backgrounds with neutral grids, so a chart sits on the page's own colour; dark mode recolours the
# text and grid lines through CSS (render.CSS), as Gradio does not theme Plotly figures.
THEME = {"template": "plotly_white", "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)"}
GRID = {"gridcolor": "rgba(127,127,127,0.25)", "zerolinecolor": "rgba(127,127,127,0.4)"}


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
    return max(300, 30_000 // max(1, runs))


def empty_figure(message: str) -> go.Figure:
    """A blank chart saying why it is blank (wrapped: plotly does not wrap annotation text itself)."""
    figure = go.Figure()
    figure.add_annotation(text="<br>".join(textwrap.wrap(message, 48)), showarrow=False, x=0.5, y=0.5,
                          xref="paper", yref="paper",
                          font={"size": 14, "color": "#64748b"})
    figure.update_layout(height=260, xaxis={"visible": False}, yaxis={"visible": False},
                         margin={"l": 20, "r": 20, "t": 20, "b": 20}, **THEME)
    return figure


def _add_lines(figure: go.Figure, cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str],
               name: str, smoothing: float, *, row: int | None = None, in_legend: set[str] | None = None) -> int:
    """Add one smoothed line per run (plus the faint raw line for few runs); returns how many runs had data.

    `in_legend` (shared by the panels of one figure) holds the runs already in the legend: each drawn run gets
    exactly one entry, in the first panel where it has data."""
    in_legend = set() if in_legend is None else in_legend
    lines, drawn = [], 0
    limit = _points_per_run(len(run_ids))
    for position, run_id in enumerate(run_ids):
        series = cache.get(run_id, name)
        if not series:
            continue
        colour = PALETTE[position % len(PALETTE)]
        if smoothing > 0 and len(run_ids) <= RAW_TRACES_UP_TO:
            steps, values = downsample(series.steps, series.values, limit)
            lines.append(go.Scattergl(x=steps, y=display_values(values), mode="lines",
                                      line={"color": colour, "width": 1},
                                      opacity=0.25, legendgroup=run_id, showlegend=False, hoverinfo="skip"))
        steps, values = downsample(series.steps, series.smoothed(smoothing), limit)
        lines.append(go.Scattergl(x=steps, y=display_values(values), mode="lines", name=labels.get(run_id, run_id),
                                  legendgroup=run_id, showlegend=run_id not in in_legend,
                                  line={"color": colour, "width": 2}))
        in_legend.add(run_id)
        drawn += 1
    if lines:  # one add_traces call: plotly re-validates the whole figure per call
        where = {"rows": [row] * len(lines), "cols": [1] * len(lines)} if row else {}
        figure.add_traces(lines, **where)
    return drawn


def metric_figure(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str], name: str | None,
                  smoothing: float, *, empty_message: str = "Select runs that logged metrics.") -> go.Figure:
    if not name:
        return empty_figure(empty_message)
    figure = go.Figure()
    if not _add_lines(figure, cache, run_ids, labels, name, smoothing):
        return empty_figure(f"No selected run logged {name!r}.")
    figure.update_layout(title=f"{name} (EMA {smoothing:.2f})", xaxis_title="step", yaxis_title=name, height=380,
                         margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"font": {"size": 10}}, **THEME)
    figure.update_xaxes(**GRID)
    figure.update_yaxes(**GRID)
    return figure


def rewards_figure(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str],
                   smoothing: float) -> go.Figure:
    components = reward_components(cache.names(run_ids))
    if not components:
        return empty_figure("No per-component rewards logged (rewards/<name>/mean).")
    shown = list(components.items())[:6]
    figure = make_subplots(rows=len(shown), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                           subplot_titles=[short for short, _ in shown])
    in_legend: set[str] = set()
    for row, (_, metric) in enumerate(shown, start=1):
        _add_lines(figure, cache, run_ids, labels, metric, smoothing, row=row, in_legend=in_legend)
    height = 170 * len(shown) + 120
    legend = {**BOTTOM_LEGEND, "y": -45 / (height - 80)}  # just under the last panel, however many there are
    figure.update_layout(height=height, margin={"l": 50, "r": 20, "t": 40, "b": 40}, legend=legend,
                         title=f"Reward components (EMA {smoothing:.2f})", **THEME)
    figure.update_xaxes(**GRID)
    figure.update_yaxes(**GRID)
    return figure


def tool_rate_figure(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str], name: str | None,
                     smoothing: float) -> go.Figure:
    if not name:
        return empty_figure("No tool-call rate logged (tools/call_frequency).")
    figure = go.Figure()
    _add_lines(figure, cache, run_ids, labels, name, smoothing)
    figure.add_hline(y=COLLAPSE_FLOOR, line={"dash": "dot", "color": "#dc2626"},
                     annotation_text="collapse threshold", annotation_position="top left")
    figure.update_layout(title=f"Tool-call rate: {name}", xaxis_title="step", yaxis_title="calls per completion",
                         height=360, margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend=BOTTOM_LEGEND, **THEME)
    figure.update_xaxes(**GRID)
    figure.update_yaxes(**GRID)
    return figure
