"""Benchmark: multi-turn tool GRPO on the embedded tiny model, and the cost of the workbench's logging.

Same process, same data, same seed, same TRL config, run twice:
- baseline: TRL's GRPOTrainer as the job builds it, without the workbench callback;
- logged: the job as it runs for real (`run_grpo`): metrics, sampled rollout
  groups as traces (with tool output images), checkpoints and job progress
  written to the store.
The rollouts are multi-turn with the sandboxed code tool live; the model is
first cold-started by SFT on expert traces so that it calls the tool.

Targets: the logged run finishes STEPS (50) steps in <= 300 s, and its wall
time per step is at most 5 % above the baseline's. Exits 1 if either is
missed. Usage: python bench/bench_train.py [--steps 50] [--order baseline-first]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import trainers  # noqa: F401,E402  (sets the OpenMP spin policy before torch loads)

TARGET_RUN_S = 300.0
TARGET_OVERHEAD = 0.05


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time between optimiser steps (the same tiny callback in both runs)."""

        def __init__(self):
            self.times: list[float] = []
            self._last = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.times.append(now - self._last)
            self._last = now

    return StepTimer()


def run_baseline(config, out: Path) -> dict:
    from trainers.grpo import build_grpo_trainer

    setup = build_grpo_trainer(config, out, with_logging=False)
    timer = step_timer()
    setup.trainer.add_callback(timer)
    started = time.perf_counter()
    setup.trainer.train()
    elapsed = time.perf_counter() - started
    setup.close()
    calls = [e.get("tools/call_frequency") for e in setup.trainer.state.log_history if "tools/call_frequency" in e]
    return {"train_s": elapsed, "steps": timer.times, "tool_calls_per_episode": statistics.fmean(calls or [0.0]),
            "tokens": _tokens_per_step(setup.trainer.state.log_history)}


def run_logged(config, store) -> dict:
    from trainers import grpo

    timer = step_timer()
    original = grpo.build_grpo_trainer
    built = []

    def with_timer(*args, **kwargs):
        setup = original(*args, **kwargs)
        setup.trainer.add_callback(timer)
        built.append(setup)
        return setup

    grpo.build_grpo_trainer = with_timer
    try:
        started = time.perf_counter()
        run_id = grpo.run_grpo(config, store=store)
        elapsed = time.perf_counter() - started
    finally:
        grpo.build_grpo_trainer = original
    run = store.get_run(run_id)
    rows = store.metrics_since(run_id)

    def run_mean(name: str) -> float:
        values = [r["value"] for r in rows if r["name"] == name]
        return statistics.fmean(values) if values else 0.0

    traces = [store.get_trace(t["id"]) for t in store.list_traces(run_id=run_id, limit=10 ** 6)]
    calls = [turn.tool_call for trace in traces for turn in trace.turns if turn.tool_call is not None]
    return {"train_s": run["summary"]["last_metrics"].get("train_runtime", elapsed), "job_s": elapsed,
            "steps": timer.times, "run_id": run_id, "traces": len(traces), "metric_rows": len(rows),
            "checkpoints": len(store.list_checkpoints(run_id)), "tool_call_rate": run_mean("tools/call_rate"),
            "tool_failure_rate": run_mean("tools/failure_rate"), "sandbox_runs": len(calls),
            "sandbox_ok": sum(1 for call in calls if call.ok),
            "logging_main_thread_s": run["summary"]["logging_main_thread_s"],
            "tokens": _tokens_per_step(built[0].trainer.state.log_history)}


def _tokens_per_step(history: list[dict]) -> list[float]:
    """TRL's running token count per step: equal in both runs when their rollouts were the same."""
    return [entry["num_tokens"] for entry in history if "num_tokens" in entry]


def per_step(times: list[float]) -> float:
    """Mean wall time per step after the first (which pays one-off warm-up in both runs)."""
    return statistics.fmean(times[1:]) if len(times) > 1 else times[0]


def paired_overhead(logged: list[float], baseline: list[float]) -> float:
    """Median over steps of logged/baseline - 1: both runs do the same rollouts at each step (same seed),
    so pairing steps cancels the work's variation and the median ignores bursts of load from other processes."""
    ratios = [a / b for a, b in zip(logged[1:], baseline[1:]) if b > 0]
    return statistics.median(ratios) - 1 if ratios else logged[0] / baseline[0] - 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--order", choices=("baseline-first", "logged-first"), default="baseline-first")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["WORKBENCH_HOME"] = str(home / "home")
    from trainers.demo_data import demo_grpo_config, demo_sft_config, prepare_demo_data
    from trainers.sft import run_sft
    from workbench.store import Store

    store = Store()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    demo = prepare_demo_data(home / "data", store, count=16, seed=0)
    sft_run = run_sft(demo_sft_config(demo, args.sft_steps), store=store)
    cold_start_s = time.perf_counter() - started
    model = store.list_checkpoints(sft_run)[-1]["path"]
    config = demo_grpo_config(demo, model, args.steps)

    results = {}
    order = ["baseline", "logged"] if args.order == "baseline-first" else ["logged", "baseline"]
    for name in order:
        print(f"[bench] {name} run: {args.steps} GRPO steps ...", flush=True)
        results[name] = run_baseline(config, home / "baseline") if name == "baseline" else run_logged(config, store)

    base, logged = results["baseline"], results["logged"]
    base_step, logged_step = per_step(base["steps"]), per_step(logged["steps"])
    overhead = paired_overhead(logged["steps"], base["steps"])
    same_rollouts = base["tokens"] == logged["tokens"]
    print()
    print(f"load average (other processes share the 2 cores): start {load_start:.1f}, end {os.getloadavg()[0]:.1f}")
    print(f"cold start (demo data + expert traces + {args.sft_steps} full-FT SFT steps): {cold_start_s:.1f} s")
    print(f"{'run':10} {'steps':>5} {'train s':>8} {'s/step':>7} {'median':>7} {'ratio':>6}")
    for name, result, step in (("baseline", base, base_step), ("logged", logged, logged_step)):
        print(f"{name:10} {len(result['steps']):5d} {result['train_s']:8.1f} {step:7.3f} "
              f"{statistics.median(result['steps']):7.3f} {step / base_step:6.3f}")
    print(f"logged run: {logged['metric_rows']} metric rows, {logged['traces']} traces, {logged['checkpoints']} "
          f"checkpoints; callback time on the training thread {logged['logging_main_thread_s']:.3f} s")
    print(f"code tool: run-mean tool-call rate {logged['tool_call_rate']:.2f} (episodes with a call), failure rate "
          f"{logged['tool_failure_rate']:.2f}; in the stored traces {logged['sandbox_runs']} sandbox runs, "
          f"{logged['sandbox_ok']} wrote an image")
    print(f"baseline tool calls per episode (TRL): {base['tool_calls_per_episode']:.2f}; identical rollouts in both "
          f"runs: {same_rollouts}; mean-time ratio {logged_step / base_step - 1:+.1%}")

    failures = []
    if logged["train_s"] > TARGET_RUN_S:
        failures.append(f"logged run took {logged['train_s']:.0f} s for {args.steps} steps (target <= {TARGET_RUN_S:.0f} s)")
    if overhead > TARGET_OVERHEAD:
        failures.append(f"logging adds {overhead:.1%} per step (target <= {TARGET_OVERHEAD:.0%})")
    if logged["tool_call_rate"] <= 0 and base["tool_calls_per_episode"] <= 0:
        failures.append("no tool calls: the code tool was not exercised")
    print(f"\nlogging overhead per step (median of paired steps): {overhead:+.1%} (target <= {TARGET_OVERHEAD:.0%}); "
          f"logged run {logged['train_s']:.0f} s (target <= {TARGET_RUN_S:.0f} s)")
    for failure in failures:
        print("MISSED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
