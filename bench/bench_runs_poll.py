"""Runs-tab polling: incremental cache polls vs re-reading whole histories, same store, same run.

Builds a store with 50 runs x 5,000 steps x 4 metrics (1M metric rows) in a
temporary WORKBENCH_HOME, warms a `MetricSeriesCache`, then repeatedly
appends one new step to every run and times
  - incremental: `cache.poll(store, runs)` (reads only rows after the last id seen), and
  - baseline: a fresh cache reading every run's whole history (what a naive poll does).
Both must end with identical series. Also reports what one redraw of the
Runs tab costs (figures + tables for all 50 runs), which only happens when a
poll found new rows. Exits non-zero if incremental is not at least
TARGET_RATIO times faster.

    python bench/bench_runs_poll.py [--quick] [--json] [--runs 50] [--steps 5000]   (--quick: 20 x 2,500)
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import Figure, finish, ratio

TARGET_RATIO = 20.0
METRICS = ("reward", "rewards/format/mean", "rewards/accuracy/mean", "tools/call_frequency")


def populate(store, runs: int, steps: int) -> list[str]:
    run_ids = []
    for index in range(runs):
        run_id = store.create_run(f"bench run {index}", "train", config={"lr": 1e-5 * (index + 1)})
        rows = [(run_id, step, name, (step % 97) / 97 + position)
                for step in range(steps) for position, name in enumerate(METRICS)]
        store.log_metric_rows(rows)
        run_ids.append(run_id)
    return run_ids


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 runs x 2,500 steps")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--polls", type=int, default=10)
    args = parser.parse_args()
    args.runs = args.runs or (20 if args.quick else 50)
    args.steps = args.steps or (2500 if args.quick else 5000)
    os.environ["WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="bench-runs-poll-")

    from workbench.run_charts import MetricSeriesCache
    from workbench.store import Store
    from workbench.ui.tab_runs import RunsSession, build_view

    store = Store()
    started = time.perf_counter()
    run_ids = populate(store, args.runs, args.steps)
    print(f"store: {args.runs} runs x {args.steps} steps x {len(METRICS)} metrics "
          f"= {args.runs * args.steps * len(METRICS):,} rows, written in {time.perf_counter() - started:.1f}s")

    cache = MetricSeriesCache()
    first_load = timed(lambda: cache.poll(store, run_ids))
    incremental, baseline = [], []
    for poll in range(args.polls):
        step = args.steps + poll
        store.log_metric_rows([(r, step, name, 0.5) for r in run_ids for name in METRICS])
        incremental.append(timed(lambda: cache.poll(store, run_ids)))
        if poll < 3:  # the baseline is slow; three samples give a stable median
            fresh = MetricSeriesCache()
            baseline.append(timed(lambda fresh=fresh: fresh.poll(store, run_ids)))
            if fresh.series != cache.series:
                print("FAIL: the incrementally updated cache differs from a full re-read")
                return 1

    session = RunsSession(cache=cache, labels={r: r for r in run_ids},
                          runs={r: store.get_run(r) for r in run_ids})
    redraw = statistics.median(timed(lambda: build_view(session, run_ids, "reward", 0.6)) for _ in range(3))

    inc, base = statistics.median(incremental), statistics.median(baseline)
    print(f"first load (all histories, once per session) {first_load * 1000:.1f} ms; "
          f"redraw after a changed poll ({args.runs} runs) {redraw * 1000:.1f} ms")
    figures = [Figure("runs_poll_incremental_vs_full", inc * 1000, "ms",
                      f"ratio >= {TARGET_RATIO:g} (full / incremental)",
                      base / inc >= TARGET_RATIO, baseline=base * 1000, ratio=ratio(base, inc),
                      note=f"{args.runs} runs x {args.steps:,} steps x {len(METRICS)} metrics, one new step per run "
                           "per poll; baseline = a fresh cache re-reading every history")]
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
