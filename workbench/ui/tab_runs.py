"""Runs tab: metric charts of selected runs with smoothing, tool-collapse warnings, tables and exports.

Each browser session keeps a `RunsSession` (its `MetricSeriesCache` plus run
labels) in gr.State. Selecting runs loads their histories once; a gr.Timer
then polls (`MetricSeriesCache.poll`: one query for what was written since the
last poll) and skips redrawing when nothing changed. Plain callbacks
(`select_runs`, `poll_runs`, `build_view`, `export_png`, `export_csv`) are
tested without a browser.
"""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from workbench import run_charts
from workbench.rewards import preset_of
from workbench.store import Store
from workbench.ui import figures, render
from workbench.ui.context import UIContext
from workbench.ui.deployment import Viewer

POLL_SECONDS = 3.0
MAX_SELECTED = 50
OPEN_WITH = 3  # runs selected when the tab opens with nothing selected


@dataclass
class RunsSession:
    """One viewer's cached metric histories and the labels of the runs they looked at."""

    cache: run_charts.MetricSeriesCache = field(default_factory=run_charts.MetricSeriesCache)
    labels: dict[str, str] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)


def preset_label(run: dict) -> str:
    """" · <preset> rewards" for a run trained with a reward preset, else "".

    >>> preset_label({"reward_spec": {"name": "visual_arft_reward", "preset": "paper"}}), preset_label({})
    (' · paper rewards', '')
    """
    preset = preset_of(run.get("reward_spec"))
    return f" · {preset} rewards" if preset else ""


def run_choices(store: Store, viewer: Viewer) -> list[tuple[str, str]]:
    return [(f"{run['name']} · {run['kind']} · {run['status']}{preset_label(run)} · {run['id']}", run["id"])
            for run in viewer.visible_runs(store)]


def default_selection(store: Store, viewer: Viewer, limit: int = OPEN_WITH) -> list[str]:
    """What the tab opens with: the newest runs that logged metrics (on a fresh workbench, the demo run)."""
    candidates = [run["id"] for run in viewer.visible_runs(store, limit=200)]
    with_metrics = store.runs_with_metrics(candidates)
    return [run_id for run_id in candidates if run_id in with_metrics][:limit]


def select_runs(store: Store, viewer: Viewer, session: RunsSession | None,
                run_ids: list[str]) -> tuple[RunsSession, list[str]]:
    """Keep the visible runs of `run_ids` (at most MAX_SELECTED), load what the cache lacks."""
    session = session or RunsSession()
    chosen = []
    for run_id in (run_ids or [])[:MAX_SELECTED]:
        run = session.runs.get(run_id) or store.get_run(run_id)
        if not viewer.can_see_run(run):
            continue
        session.runs[run_id] = run
        session.labels[run_id] = f"{render.clip(run['name'], 48)} ({run_id}){preset_label(run)}"
        chosen.append(run_id)
    session.cache.poll(store, chosen)
    return session, chosen


def poll_runs(store: Store, session: RunsSession | None, run_ids: list[str]) -> bool:
    """Read metric rows added since the last poll for the already selected runs; True if any came."""
    if session is None or not run_ids:
        return False
    known = [run_id for run_id in run_ids if run_id in session.runs]
    return bool(session.cache.poll(store, known))


def pick_metric(names: list[str], current: str | None) -> str | None:
    """Keep the current metric if it exists, else prefer the held-out reward, then the training reward.

    >>> pick_metric(["loss", "reward"], None), pick_metric(["loss"], "reward"), pick_metric([], "x")
    ('reward', 'loss', None)
    >>> pick_metric(["eval_reward", "loss", "reward"], None)
    'eval_reward'
    """
    if current in names:
        return current
    for preferred in ("eval_reward", "reward", "train/reward"):
        if preferred in names:
            return preferred
    return names[0] if names else None


@dataclass
class RunsView:
    """Everything the tab shows for a selection."""

    metric_names: list[str]
    metric: str | None
    metric_figure: figures.Chart
    rewards_figure: figures.Chart
    tool_figure: figures.Chart
    warnings: str
    summary: pd.DataFrame
    diff: pd.DataFrame


def collapse_warnings(session: RunsSession, run_ids: list[str], smoothing: float) -> tuple[str | None, str]:
    """The tool-rate metric name and an HTML warning per run whose tool use collapsed."""
    name = run_charts.tool_rate_name(session.cache.names(run_ids))
    if name is None:
        return None, ""
    messages = []
    for run_id in run_ids:
        warning = run_charts.detect_tool_collapse(run_id, session.cache.get(run_id, name), smoothing)
        if warning:
            messages.append(warning.message(session.labels.get(run_id, run_id)))
    if not messages:
        return name, ""
    items = "".join(f"<li>{render.esc(m)}</li>" for m in messages)
    return name, f'<div class="wb-warning"><b>⚠ Tool use is collapsing</b><ul>{items}</ul></div>'


def build_view(session: RunsSession, run_ids: list[str], metric: str | None, smoothing: float) -> RunsView:
    cache, labels = session.cache, session.labels
    names = cache.names(run_ids)
    metric = pick_metric(names, metric)
    tool_name, warning = collapse_warnings(session, run_ids, smoothing)
    table_names = [n for n in [metric, *run_charts.reward_components(names).values(), tool_name] if n]
    summary = pd.DataFrame(run_charts.summary_rows(cache, run_ids, labels, list(dict.fromkeys(table_names))),
                           columns=run_charts.SUMMARY_HEADERS)
    runs = [session.runs[r] for r in run_ids if r in session.runs]
    headers, rows = run_charts.config_diff(runs)
    presets = [preset_of(run.get("reward_spec")) or "—" for run in runs]
    if len(set(presets)) > 1:
        rows.insert(0, ["reward preset", *presets])
    diff = pd.DataFrame(rows, columns=headers) if rows else pd.DataFrame(
        [["(no differences)"] + [""] * (len(headers) - 1)], columns=headers)
    return RunsView(names, metric, figures.metric_figure(cache, run_ids, labels, metric, smoothing),
                    figures.rewards_figure(cache, run_ids, labels, smoothing),
                    figures.tool_rate_figure(cache, run_ids, labels, tool_name, smoothing), warning, summary, diff)


def _export_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="workbench-export-"))


def export_png(session: RunsSession | None, run_ids: list[str], metric: str | None, smoothing: float) -> Path:
    if session is None or not metric or not run_ids:
        raise ValueError("select runs and a metric first")
    return run_charts.export_png(session.cache, run_ids, session.labels, metric, smoothing,
                                 _export_dir() / f"{metric.replace('/', '_')}.png")


def export_csv(session: RunsSession | None, run_ids: list[str], smoothing: float) -> Path:
    if session is None or not run_ids:
        raise ValueError("select runs first")
    names = session.cache.names(run_ids)
    full_names = {run_id: session.runs[run_id]["name"] for run_id in run_ids}  # the chart's labels are clipped
    return run_charts.export_csv(session.cache, run_ids, full_names, names, smoothing, _export_dir() / "metrics.csv")


@dataclass
class RunsTab:
    """The poll timer (the app turns it on only while this tab is open) and the run-list refresh."""

    timer: gr.Timer
    refresh_fn: Any
    refresh_inputs: list
    refresh_outputs: list


def build(ctx: UIContext) -> RunsTab:
    store = ctx.store
    state = gr.State(None, time_to_live=3600)  # a session's cached histories; freed an hour after last use
    timer = gr.Timer(POLL_SECONDS, active=False)
    with gr.Row():
        runs = gr.Dropdown([], multiselect=True, label=f"Runs (up to {MAX_SELECTED})", scale=5, elem_id="rn-runs")
        refresh = gr.Button("Refresh run list", scale=1, elem_id="rn-refresh")
    with gr.Row():
        metric = gr.Dropdown([], label="Metric", scale=3, elem_id="rn-metric")
        smoothing = gr.Slider(0.0, 0.99, value=0.6, step=0.01, label="Smoothing (EMA weight)", scale=3)
        live = gr.Checkbox(True, label=f"Live (poll every {POLL_SECONDS:.0f}s)", scale=1)
    warning = gr.HTML(elem_id="rn-warning")
    metric_plot = gr.Plot(label="Metric vs step", elem_id="rn-metric-plot")
    with gr.Row():
        rewards_plot = gr.Plot(label="Reward components")
        tool_plot = gr.Plot(label="Tool-call rate")
    summary = gr.Dataframe(label="Final and best values", interactive=False, max_height=300)
    diff = gr.Dataframe(label="Config differences between selected runs", interactive=False, max_height=300)
    with gr.Row():
        png_button = gr.Button("Export chart as PNG")
        csv_button = gr.Button("Export data as CSV")
        download = gr.File(label="Download", interactive=False, height=90, elem_id="rn-download")

    view_outputs = [metric, metric_plot, rewards_plot, tool_plot, warning, summary, diff]

    def show(view: RunsView) -> tuple:
        return (gr.Dropdown(choices=view.metric_names, value=view.metric), view.metric_figure.plot(),
                view.rewards_figure.plot(), view.tool_figure.plot(), view.warnings,
                view.summary, view.diff)

    def on_refresh(request: gr.Request, selected, visitor=None):  # the visitor token: public demo only
        viewer = ctx.viewer(request, visitor)
        choices = run_choices(store, viewer)
        valid = {value for _, value in choices}
        kept = [r for r in (selected or []) if r in valid]
        return gr.Dropdown(choices=choices, value=kept or default_selection(store, viewer))

    def on_select(request: gr.Request, selected, metric_name, weight, session, visitor=None):
        session, chosen = select_runs(store, ctx.viewer(request, visitor), session, selected)
        return (session, *show(build_view(session, chosen, metric_name, weight)))

    def on_tick(selected, metric_name, weight, enabled, session):
        if not enabled or not poll_runs(store, session, selected or []):
            return tuple(gr.skip() for _ in range(len(view_outputs) + 1))
        chosen = [r for r in selected if r in session.runs]
        return (session, *show(build_view(session, chosen, metric_name, weight)))

    def on_png(selected, metric_name, weight, session):
        try:
            return str(export_png(session, [r for r in selected or [] if session and r in session.runs],
                                  metric_name, weight))
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def on_csv(selected, weight, session):
        try:
            return str(export_csv(session, [r for r in selected or [] if session and r in session.runs], weight))
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    who = ctx.visitor_inputs()
    refresh.click(on_refresh, [runs, *who], runs, api_name="list_runs")
    chart_inputs = [runs, metric, smoothing, state, *who]
    runs.change(on_select, chart_inputs, [state, *view_outputs], api_name="load_runs_chart")
    metric.input(on_select, chart_inputs, [state, *view_outputs], api_visibility="private")
    smoothing.release(on_select, chart_inputs, [state, *view_outputs], api_visibility="private")
    timer.tick(on_tick, [runs, metric, smoothing, live, state], [state, *view_outputs],
               api_visibility="private", concurrency_limit=4, concurrency_id="poll")
    png_button.click(on_png, [runs, metric, smoothing, state], download, api_name="export_chart_png")
    csv_button.click(on_csv, [runs, smoothing, state], download, api_name="export_chart_csv")
    return RunsTab(timer=timer, refresh_fn=on_refresh, refresh_inputs=[runs, *who], refresh_outputs=[runs])
