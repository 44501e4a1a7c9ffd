"""Run metrics in the workbench database: the `metric_batches` table and the Store methods that use it.

Part of `workbench.store` (the Store class mixes `MetricStore` in, so it shares
the store's connection and write transactions); kept in its own module so the
store file stays one concern per screen. One row per (run, write): a write
holds any number of steps and metrics as columns -- `names` (JSON list), and
for each name its count, then all steps (int64) and values (float64) as
little-endian arrays. A reader turns a batch into numpy arrays per metric with
no Python object per value, and a writer that logs 5,000 steps of 4 metrics
in one flush adds one row instead of 20,000. Row ids grow, so "batches of run
R after id N" is the viewers' incremental poll.
"""

import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

COLUMNS = "metric_batches.id, run_id, names, counts, steps, metric_values"


@dataclass
class MetricBatch:
    """One stored write of a run's metrics: per metric name, its steps and values in logged order."""

    id: int
    run_id: str
    names: list[str]
    counts: np.ndarray
    steps: np.ndarray
    values: np.ndarray

    def columns(self) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
        """(name, steps, values) per metric; array views, no copy."""
        stop = 0
        for name, count in zip(self.names, self.counts.tolist()):
            start, stop = stop, stop + count
            yield name, self.steps[start:stop], self.values[start:stop]


def pack_columns(columns: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> tuple[str, bytes, bytes, bytes]:
    """{name: (steps, values)} -> the four stored columns (names JSON, counts, steps, values)."""
    names = list(columns)
    counts = np.array([len(columns[name][0]) for name in names], dtype="<i4")
    steps = np.concatenate([np.asarray(columns[name][0], dtype="<i8") for name in names]) if names else []
    values = np.concatenate([np.asarray(columns[name][1], dtype="<f8") for name in names]) if names else []
    return json.dumps(names), counts.tobytes(), np.asarray(steps, "<i8").tobytes(), np.asarray(values, "<f8").tobytes()


@functools.lru_cache(maxsize=1024)
def _names(text: str) -> list[str]:
    """Decoded names (a run writes the same few name lists over and over)."""
    return json.loads(text)


def unpack_row(row: Sequence[Any]) -> MetricBatch:
    batch_id, run_id, names, counts, steps, values = row
    return MetricBatch(batch_id, run_id, _names(names), np.frombuffer(counts, dtype="<i4"),
                       np.frombuffer(steps, dtype="<i8"), np.frombuffer(values, dtype="<f8"))


def group_rows(rows: Iterable[tuple[str, int, str, float]]) -> dict[str, dict[str, tuple[list, list]]]:
    """(run, step, name, value) rows -> {run: {name: (steps, values)}}, logged order kept, None values dropped."""
    grouped: dict[str, dict[str, tuple[list, list]]] = {}
    for run_id, step, name, value in rows:
        if value is None:
            continue
        steps, values = grouped.setdefault(run_id, {}).setdefault(name, ([], []))
        steps.append(int(step))
        values.append(float(value))
    return grouped


class MetricStore:
    """The Store's metric methods (needs the store's `db` and `_transaction`)."""

    def log_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        self.log_metric_rows([(run_id, step, name, value) for name, value in values.items()])

    def log_metric_rows(self, rows: Iterable[tuple[str, int, str, float]]) -> None:
        """Store (run, step, name, value) rows in one transaction (one batch per run)."""
        self.append_metric_columns(group_rows(rows))

    def append_metric_columns(self, runs: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float]]]]) -> None:
        """Store {run: {name: (steps, values)}} in one transaction: one batch row per run."""
        records = [(run_id, *pack_columns(columns), time.time()) for run_id, columns in runs.items() if columns]
        if not records:
            return
        with self._transaction() as db:
            db.conn.executemany("insert into metric_batches (run_id, names, counts, steps, metric_values, created_at) "
                                "values (?, ?, ?, ?, ?, ?)", records)
            db.conn.executemany("update runs set updated_at = ? where id = ?",
                                [(record[-1], record[0]) for record in records])

    def metric_batches_since(self, after_ids: Mapping[str, int]) -> list[MetricBatch]:
        """Batches of the given runs stored after each run's batch id (0: all), oldest first; one query."""
        if not after_ids:
            return []
        marks = ",".join("(?, ?)" for _ in after_ids)
        sql = (f"with after(run_id, last_id) as (values {marks}) select {COLUMNS} from after "
               "join metric_batches using (run_id) where metric_batches.id > after.last_id order by id")
        cursor = self.db.execute(sql, [value for pair in after_ids.items() for value in pair])
        return [unpack_row(row) for row in cursor]

    def metrics_since(self, run_id: str, after_id: int = 0, names: list[str] | None = None) -> list[dict]:
        """Metric rows of a run stored after batch `after_id`: dicts of id (the batch's), step, name, value."""
        wanted = set(names) if names else None
        rows = []
        for batch in self.metric_batches_since({run_id: after_id}):
            for name, steps, values in batch.columns():
                if wanted is None or name in wanted:
                    rows += [{"id": batch.id, "step": step, "name": name, "value": value}
                             for step, value in zip(steps.tolist(), values.tolist())]
        return rows

    def runs_with_metrics(self, run_ids: list[str]) -> set[str]:
        """The runs of `run_ids` that logged at least one metric (one index probe each)."""
        sql = "select 1 from metric_batches where run_id = ? limit 1"
        return {run_id for run_id in run_ids if self.db.execute(sql, [run_id]).fetchone()}

    def metric_names(self, run_ids: list[str]) -> list[str]:
        marks = ",".join("?" * len(run_ids))
        found: set[str] = set()
        for (names,) in self.db.execute(f"select distinct names from metric_batches where run_id in ({marks})",
                                        run_ids):
            found.update(json.loads(names))
        return sorted(found)

    def last_metric_values(self, run_id: str) -> dict[str, float]:
        """Each metric's most recently logged value."""
        last: dict[str, float] = {}
        for batch in self.metric_batches_since({run_id: 0}):
            for name, _, values in batch.columns():
                last[name] = float(values[-1])
        return last
