"""Benchmark: logging and reading training metrics, workbench vs trackio, same workload, same run.

Workload (the issue's): RUNS runs x STEPS steps x 4 metrics, logged one call
per step, as a training loop logs. Each side runs in a fresh child process
(its own imports, its own CPU clock), alternating trackio / workbench for
REPEATS rounds so machine load hits both alike; medians are compared.
- write: per run, create it (trackio.init / Store.create_run), log every step
  (run.log / MetricLogger.log), finish (run.finish / MetricLogger.flush: the
  data is committed). Wall time of that whole loop is what the caller is
  blocked for; process CPU time (all threads) is what logging costs the machine.
  Both per logged step. Baseline: the store's previous way, one synchronous
  `Store.log_metrics` transaction per step (timed on the first BASELINE_STEPS
  steps of one run).
- read: every run's whole history from a fresh reader: trackio's
  `SQLiteStorage.get_logs_batch` vs a new MetricSeriesCache polling all runs
  (what the Runs tab does on opening).
- incremental poll, as a viewer polls a live run: POLL_ROUNDS times, +10 steps
  per run, then read what is new (median): the same cache's `poll` vs trackio's
  storage read the cheapest way it allows (it has no incremental API):
  `SELECT ... WHERE id > last` on a kept connection plus decoding each row's JSON.
- on-disk size of the same data.
Targets: write wall and CPU <= 1.0x trackio, read <= 1.0x, poll <= 1.0x.
Needs bench/requirements.txt (trackio).

    python bench/bench_metrics.py [--quick] [--json] [--runs 50] [--steps 5000] [--repeats 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Figure, finish, ratio  # noqa: E402

METRICS = ("reward", "rewards/format/mean", "rewards/accuracy/mean", "tools/call_frequency")
POLL_STEPS = 10
POLL_ROUNDS = 5
BASELINE_STEPS = 2000
PROJECT = "bench"
CHILD_MARK = "CHILD-RESULT "  # trackio prints its own lines, even at exit


def step_values(step: int) -> dict[str, float]:
    return {name: (step % 97) / 97 + position for position, name in enumerate(METRICS)}


def timed(function) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def child_workbench(runs: int, steps: int, folder: Path) -> dict:
    os.environ["WORKBENCH_HOME"] = str(folder)
    from workbench.metric_log import MetricLogger
    from workbench.run_charts import MetricSeriesCache
    from workbench.store import Store

    store = Store()
    logger = MetricLogger(store)
    run_ids = []

    def write() -> None:
        for index in range(runs):
            run_id = store.create_run(f"run-{index}", "train")
            for step in range(steps):
                logger.log(run_id, step, step_values(step))
            logger.flush()  # the run is finished: everything committed
            run_ids.append(run_id)

    write_wall, write_cpu = timed(write)
    cache = MetricSeriesCache()
    read_s, _ = timed(lambda: cache.poll(Store(store.path), run_ids))
    values = sum(len(series) for run in cache.series.values() for series in run.values())
    polls = []
    for first in range(steps, steps + POLL_ROUNDS * POLL_STEPS, POLL_STEPS):
        for run_id in run_ids:
            for step in range(first, first + POLL_STEPS):
                logger.log(run_id, step, step_values(step))
        logger.flush()
        polls.append(timed(lambda: cache.poll(store, run_ids))[0])
    polled = sum(len(series) for run in cache.series.values() for series in run.values()) - values
    baseline_run = store.create_run("baseline", "train")
    baseline_wall, baseline_cpu = timed(lambda: [store.log_metrics(baseline_run, step, step_values(step))
                                                 for step in range(min(steps, BASELINE_STEPS))])
    logger.close()
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"write_wall": write_wall, "write_cpu": write_cpu, "read_s": read_s, "values": values,
            "poll_s": statistics.median(polls), "polled": polled, "disk_mb": store.path.stat().st_size / 1e6,
            "baseline_step_wall": baseline_wall / min(steps, BASELINE_STEPS),
            "baseline_step_cpu": baseline_cpu / min(steps, BASELINE_STEPS)}


def child_trackio(runs: int, steps: int, folder: Path) -> dict:
    os.environ["TRACKIO_DIR"] = str(folder)
    import sqlite3

    import orjson
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    names = [f"run-{index}" for index in range(runs)]

    def write() -> None:
        for name in names:
            run = trackio.init(project=PROJECT, name=name, auto_log_cpu=False, auto_log_gpu=False)
            for step in range(steps):
                run.log(step_values(step), step=step)
            run.finish()

    write_wall, write_cpu = timed(write)
    logs: list = []
    read_s, _ = timed(lambda: logs.extend(SQLiteStorage.get_logs_batch(PROJECT, [{"run": n} for n in names])))
    values = sum(len([k for k in entry if k in METRICS]) for run in logs for entry in run["logs"])
    path = SQLiteStorage.get_project_db_path(PROJECT)
    conn = sqlite3.connect(path)  # a viewer keeps its connection
    last_id = conn.execute("SELECT max(id) FROM metrics").fetchone()[0]
    fresh: dict[str, list] = {}

    def poll() -> None:
        nonlocal last_id
        for row_id, run_name, step, metrics in conn.execute(
                "SELECT id, run_name, step, metrics FROM metrics WHERE id > ? ORDER BY id", (last_id,)):
            fresh.setdefault(run_name, []).append((step, orjson.loads(metrics)))
            last_id = row_id

    polls = []
    for first in range(steps, steps + POLL_ROUNDS * POLL_STEPS, POLL_STEPS):
        for name in names:
            run = trackio.init(project=PROJECT, name=name, resume="must", auto_log_cpu=False, auto_log_gpu=False)
            for step in range(first, first + POLL_STEPS):
                run.log(step_values(step), step=step)
            run.finish()
        polls.append(timed(poll)[0])
    polled = sum(len([k for k in metrics if k in METRICS]) for rows in fresh.values() for _, metrics in rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"write_wall": write_wall, "write_cpu": write_cpu, "read_s": read_s, "values": values,
            "poll_s": statistics.median(polls), "polled": polled, "disk_mb": path.stat().st_size / 1e6}


def run_child(side: str, runs: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-metrics-{side}-") as folder:
        done = subprocess.run([sys.executable, __file__, "--child", side, str(runs), str(steps), folder],
                              capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} child failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith(CHILD_MARK))
    return json.loads(line[len(CHILD_MARK):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 runs x 2,000 steps")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, runs, steps, folder = args.child
        child = child_workbench if side == "workbench" else child_trackio
        print(CHILD_MARK + json.dumps(child(int(runs), int(steps), Path(folder))), flush=True)
        return 0
    runs = args.runs or (10 if args.quick else 50)
    steps = args.steps or (2000 if args.quick else 5000)

    results: dict[str, list[dict]] = {"trackio": [], "workbench": []}
    for _ in range(args.repeats):
        for side in results:  # alternate, so load drifts hit both
            results[side].append(run_child(side, runs, steps))
    ours, anchor = results["workbench"], results["trackio"]
    expected = runs * steps * len(METRICS)
    polled = runs * POLL_ROUNDS * POLL_STEPS * len(METRICS)
    if any(r["values"] != expected or r["polled"] != polled for r in ours + anchor):
        raise SystemExit(f"a side did not read back every value: {[(r['values'], r['polled']) for r in ours + anchor]}")

    def median(side: list[dict], key: str, scale: float = 1.0) -> float:
        return statistics.median(r[key] for r in side) * scale

    per_step_us = 1e6 / (runs * steps)
    write = {name: median(side, "write_wall", per_step_us) for name, side in results.items()}
    cpu = {name: median(side, "write_cpu", per_step_us) for name, side in results.items()}
    read = {name: median(side, "read_s") for name, side in results.items()}
    poll = {name: median(side, "poll_s", 1000) for name, side in results.items()}
    disk = {name: median(side, "disk_mb") for name, side in results.items()}
    print(f"{runs} runs x {steps:,} steps x {len(METRICS)} metrics = {expected:,} values, one log call per step; "
          f"medians of {args.repeats} alternating rounds (min write: workbench "
          f"{min(r['write_wall'] for r in ours):.2f} s, trackio {min(r['write_wall'] for r in anchor):.2f} s)")
    figures = [
        Figure("metrics_write_vs_trackio", write["workbench"], "us/step", "ratio <= 1.0 (ours / trackio)",
               write["workbench"] <= write["trackio"], baseline=median(ours, "baseline_step_wall", 1e6),
               anchor=write["trackio"], ratio=ratio(write["workbench"], write["trackio"]),
               note="caller-blocked wall time per logged step, create + log + finish; baseline = one "
                    "Store.log_metrics transaction per step"),
        Figure("metrics_write_cpu_vs_trackio", cpu["workbench"], "us/step", "ratio <= 1.0 (ours / trackio)",
               cpu["workbench"] <= cpu["trackio"], baseline=median(ours, "baseline_step_cpu", 1e6),
               anchor=cpu["trackio"], ratio=ratio(cpu["workbench"], cpu["trackio"]),
               note="process CPU (all threads) per logged step"),
        Figure("metrics_read_vs_trackio", read["workbench"], "s", "ratio <= 1.0 (ours / trackio)",
               read["workbench"] <= read["trackio"], anchor=read["trackio"],
               ratio=ratio(read["workbench"], read["trackio"]), note=f"all {runs} histories, fresh reader"),
        Figure("metrics_poll_vs_trackio", poll["workbench"], "ms", "ratio <= 1.0 (ours / trackio)",
               poll["workbench"] <= poll["trackio"], anchor=poll["trackio"],
               ratio=ratio(poll["workbench"], poll["trackio"]),
               note=f"+{POLL_STEPS} steps per run, median of {POLL_ROUNDS} rounds; trackio: raw id > last query + "
                    "JSON decode on a kept connection (it has no incremental API)"),
        Figure("metrics_disk_vs_trackio", disk["workbench"], "MB", "reported", True, anchor=disk["trackio"],
               ratio=ratio(disk["workbench"], disk["trackio"])),
    ]
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
