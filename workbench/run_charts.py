"""Metric series for comparing runs: incremental caching, smoothing, summaries and exports.

Owns `MetricSeriesCache` (a per-viewer copy of run metric histories that is
kept current with `Store.metric_batches_since`, so a poll reads only what was
written since the last one), EMA smoothing, display downsampling, tool-use collapse
detection, the final/best table, config diffs between runs, and CSV/PNG
export. No Gradio here: the Runs tab and the benchmark both use it.

Metric names follow TRL's GRPO logging: reward components are
`rewards/<name>/mean` (or `reward/<name>`), tool use is `tools/call_frequency`
(`tool_call_rate` is accepted too).
"""

import bisect
import csv
import json
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REWARD_COMPONENT = re.compile(r"^rewards?/(?P<name>[^/]+)(?:/mean)?$")
TOOL_RATE_NAMES = ("tools/call_frequency", "tool_call_rate", "tools/call_rate")
# Held-out curves drawn beside the tool-call rate (trainers.grpo logs them at each evaluation), with their legend
LEARNING_NAMES = {"eval_tools/call_rate_degraded": "held-out tool calls, degraded images",
                  "eval_rewards/answer_f1/mean": "held-out answer F1"}
LOWER_IS_BETTER = re.compile(r"loss|kl|error|failure|clipped|length")
COLLAPSE_FLOOR = 0.05  # a tool-call rate under this counts as "no tool use"
COLLAPSE_DROP = 0.25  # ... or under this fraction of the run's own peak


@dataclass
class Series:
    """One metric of one run, sorted by step; re-logging a step replaces its value.

    Smoothed copies are cached per EMA weight and extended as points are
    appended, so redrawing after a poll costs only the new points.
    """

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    _smoothed: dict[float, "_Smoothed"] = field(default_factory=dict, compare=False, repr=False)
    _display: dict[tuple, tuple] = field(default_factory=dict, compare=False, repr=False)

    def add(self, step: int, value: float) -> None:
        if not self.steps or step > self.steps[-1]:
            self.steps.append(step)
            self.values.append(value)
            return
        self._smoothed.clear()  # an earlier point changed: cached smoothing and display are stale
        self._display.clear()
        position = bisect.bisect_left(self.steps, step)
        if position < len(self.steps) and self.steps[position] == step:
            self.values[position] = value  # a resumed job logged the step again
        else:
            self.steps.insert(position, step)
            self.values.insert(position, value)

    def extend(self, steps: list[int], values: list[float]) -> None:
        """Add many points at once: a plain append when they come after the last one in order."""
        if steps and (not self.steps or steps[0] > self.steps[-1]) and all(map(operator.lt, steps, steps[1:])):
            self.steps += steps
            self.values += values
            return
        for step, value in zip(steps, values):
            self.add(step, value)

    def smoothed(self, weight: float) -> list[float]:
        """`ema(self.values, weight)`, computed incrementally."""
        cached = self._smoothed.get(weight)
        if cached is None:
            if len(self._smoothed) >= 4:  # a slider being dragged: keep only a few weights
                self._smoothed.clear()
            cached = self._smoothed[weight] = _Smoothed(weight)
        cached.extend(self.values)
        return cached.out

    def display(self, weight: float, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        """`downsample`d (steps, values smoothed with `weight`; 0: raw) for drawing, kept until the series
        changes: redrawing a selection after adding one run recomputes only that run's lines."""
        key = (weight, max_points, len(self.steps))  # appends change the length; rewrites clear the cache
        found = self._display.get(key)
        if found is None:
            if len(self._display) >= 8:
                self._display.clear()
            found = self._display[key] = downsample(self.steps, self.smoothed(weight) if weight else self.values,
                                                    max_points)
        return found

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class _Smoothed:
    """Running state of one EMA over a growing list."""

    weight: float
    out: list[float] = field(default_factory=list)
    running: float = 0.0
    correction: float = 1.0

    def extend(self, values: list[float]) -> None:
        weight = self.weight
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"smoothing weight {weight} must be in [0, 1)")
        for value in values[len(self.out):]:
            self.running = self.running * weight + (1.0 - weight) * value
            self.correction *= weight
            self.out.append(self.running / (1.0 - self.correction))


class MetricSeriesCache:
    """Metric histories of the runs a viewer looks at, refreshed incrementally.

    `poll` asks the store, in one query, only for metric batches whose id is
    above the last one seen per run (`last_row_id`). Adding a point twice is
    harmless (same step, same value), so two overlapping polls of one session
    cannot corrupt the cache.
    """

    def __init__(self) -> None:
        self.series: dict[str, dict[str, Series]] = {}
        self.last_row_id: dict[str, int] = {}

    def poll(self, store: Any, run_ids: Iterable[str]) -> set[str]:
        """Read new metric batches of `run_ids`; returns the runs that changed."""
        after = {run_id: self.last_row_id.get(run_id, 0) for run_id in run_ids}
        for run_id in after:
            self.series.setdefault(run_id, {})
        changed = set()
        for batch in store.metric_batches_since(after):
            run_series = self.series[batch.run_id]
            steps, values = batch.steps.tolist(), batch.values.tolist()  # two C calls per batch, not per metric
            stop = 0
            for name, count in zip(batch.names, batch.counts.tolist()):
                start, stop = stop, stop + count
                series = run_series.get(name)
                if series is None:
                    series = run_series[name] = Series()
                series.extend(steps[start:stop], values[start:stop])
            self.last_row_id[batch.run_id] = max(self.last_row_id.get(batch.run_id, 0), batch.id)
            changed.add(batch.run_id)
        return changed

    def get(self, run_id: str, name: str) -> Series | None:
        return self.series.get(run_id, {}).get(name)

    def names(self, run_ids: Iterable[str]) -> list[str]:
        found: set[str] = set()
        for run_id in run_ids:
            found.update(self.series.get(run_id, {}))
        return sorted(found)

    @property
    def row_count(self) -> int:
        return sum(len(s) for run in self.series.values() for s in run.values())


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with start-up bias correction (TensorBoard style).

    >>> [round(v, 3) for v in ema([1.0, 1.0, 4.0], 0.5)]
    [1.0, 1.0, 2.714]
    """
    smoothed = _Smoothed(weight)
    smoothed.extend(values)
    return smoothed.out


def downsample(steps: list[int], values: list[float], max_points: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points (as arrays), keeping each bucket's min and max so spikes stay visible.

    >>> [a.tolist() for a in downsample([1, 2, 3], [1.0, 2.0, 3.0], 10)]
    [[1, 2, 3], [1.0, 2.0, 3.0]]
    >>> len(downsample(list(range(10000)), [0.0] * 10000, 100)[0]) <= 102
    True
    """
    step_array, value_array = np.asarray(steps), np.asarray(values, dtype=float)
    n = len(step_array)
    if n <= max_points:
        return step_array, value_array
    size = -(-n // max(1, max_points // 2))  # bucket length, rounded up
    whole = (n // size) * size
    buckets = value_array[:whole].reshape(-1, size)
    offsets = np.arange(0, whole, size)
    keep = np.concatenate([offsets + buckets.argmin(axis=1), offsets + buckets.argmax(axis=1)])
    if whole < n:
        tail = value_array[whole:]
        keep = np.concatenate([keep, [whole + tail.argmin(), whole + tail.argmax()]])
    keep = np.unique(np.append(keep, n - 1))  # sorted, no duplicates, last point kept
    return step_array[keep], value_array[keep]


def reward_components(names: Iterable[str]) -> dict[str, str]:
    """Reward-component metric names -> short component name.

    >>> reward_components(["reward", "rewards/format/mean", "rewards/format/std", "reward/accuracy"])
    {'format': 'rewards/format/mean', 'accuracy': 'reward/accuracy'}
    """
    found: dict[str, str] = {}
    for name in names:
        match = REWARD_COMPONENT.match(name)
        if match and match.group("name") not in ("std", "mean"):
            found.setdefault(match.group("name"), name)
    return found


def tool_rate_name(names: Iterable[str]) -> str | None:
    names = set(names)
    return next((n for n in TOOL_RATE_NAMES if n in names), None)


@dataclass
class CollapseWarning:
    """Tool use of one run fell toward zero."""

    run_id: str
    latest: float
    peak: float
    step: int

    def message(self, label: str) -> str:
        return (f"{label}: tool-call rate fell to {self.latest:.3f} at step {self.step} "
                f"(peak {self.peak:.3f}); the policy may be learning to answer without tools.")


def detect_tool_collapse(run_id: str, series: Series | None, smoothing: float = 0.6) -> CollapseWarning | None:
    """Warn when the smoothed tool-call rate ends near zero or far below its own peak.

    >>> s = Series(list(range(20)), [0.8] * 10 + [0.0] * 10)
    >>> detect_tool_collapse("r", s).latest < 0.05
    True
    >>> detect_tool_collapse("r", Series(list(range(5)), [0.5] * 5)) is None
    True
    """
    if series is None or len(series) < 2:
        return None
    smoothed = series.smoothed(smoothing)
    latest, peak = smoothed[-1], max(smoothed)
    if latest < COLLAPSE_FLOOR or (peak > 0 and latest < COLLAPSE_DROP * peak):
        return CollapseWarning(run_id, latest, peak, series.steps[-1])
    return None


def best_value(name: str, values: list[float]) -> tuple[int, float]:
    """Index and value of the best point: lowest for losses/KL/lengths, else highest."""
    array = np.asarray(values, dtype=float)
    index = int(np.nanargmin(array) if LOWER_IS_BETTER.search(name) else np.nanargmax(array))
    return index, float(array[index])


SUMMARY_HEADERS = ["run", "metric", "last", "best", "best step", "last step", "points"]


def summary_rows(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str],
                 names: list[str] | None = None) -> list[list[Any]]:
    """Final and best value of each metric of each run (one row per run x metric)."""
    rows = []
    for run_id in run_ids:
        for name in names or cache.names([run_id]):
            series = cache.get(run_id, name)
            if not series:
                continue
            index, best = best_value(name, series.values)
            rows.append([labels.get(run_id, run_id), name, round(series.values[-1], 6), round(best, 6),
                         series.steps[index], series.steps[-1], len(series)])
    return rows


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys with JSON-text leaves.

    >>> flatten({"a": {"b": 1}, "c": [1, 2]})
    {'a.b': '1', 'c': '[1, 2]'}
    """
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)}


def config_diff(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the settings that differ between runs (model and config)."""
    flat = []
    for run in runs:
        values = flatten(run.get("config") or {})
        values["model_id"] = json.dumps(run.get("model_id"))
        values["kind"] = json.dumps(run.get("kind"))
        flat.append(values)
    headers = ["setting"] + [f"{run.get('name') or run['id']} ({run['id']})" for run in runs]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for key in keys:
        cells = [values.get(key, "—") for values in flat]
        if len(set(cells)) > 1:
            rows.append([key] + cells)
    return headers, rows


def export_csv(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str], names: list[str],
               smoothing: float, path: str | Path) -> Path:
    """Long-format CSV: run, run_id, metric, step, value, smoothed."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "run_id", "metric", "step", "value", "smoothed"])
        for run_id in run_ids:
            for name in names:
                series = cache.get(run_id, name)
                if not series:
                    continue
                for step, value, smooth in zip(series.steps, series.values, series.smoothed(smoothing)):
                    writer.writerow([labels.get(run_id, run_id), run_id, name, step, value, round(smooth, 8)])
    return path


def export_png(cache: MetricSeriesCache, run_ids: list[str], labels: dict[str, str], name: str,
               smoothing: float, path: str | Path) -> Path:
    """The metric chart as a PNG drawn with matplotlib (no browser needed): per run, the smoothed line and,
    when smoothing, the raw values faintly behind it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5), dpi=110)
    try:
        for run_id in run_ids:
            series = cache.get(run_id, name)
            if not series:
                continue
            line = axis.plot(*downsample(series.steps, series.smoothed(smoothing), 4000), linewidth=1.4,
                             label=labels.get(run_id, run_id))[0]
            if smoothing > 0:  # the raw values too, faint, as the Runs chart draws them
                axis.plot(*downsample(series.steps, series.values, 4000), linewidth=0.8, alpha=0.3,
                          color=line.get_color())
        axis.set_xlabel("step")
        axis.set_ylabel(name)
        axis.set_title(f"{name} (EMA {smoothing:.2f})")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8, loc="best")
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return Path(path)
