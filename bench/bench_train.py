"""Benchmark: multi-turn tool GRPO on the embedded tiny model, and the cost of the workbench's logging.

Same process, same data, same seed, same TRL config (trainers.demo_data's
click-to-train settings), run three times in the order baseline, logged,
baseline:
- baseline: TRL's GRPOTrainer as the job builds it, without the workbench callback;
- logged: the job as it runs for real (`run_grpo`): metrics, sampled rollout
  groups as traces (with tool output images), checkpoints and job progress
  written to the store.
The rollouts are multi-turn with the sandboxed code tool live; the model is
first cold-started by SFT on expert traces so that it calls the tool.

With the same seed every run samples the same rollouts (checked), so steps
pair up across runs. Other processes share the two cores, so the overhead is
the median over steps of logged / mean(baseline before, baseline after) - 1,
in wall time (what the target is about) and in this process's CPU time (all
threads, the store writer included; insensitive to other processes' load).

Targets: the logged run finishes STEPS (50) steps in <= 300 s, and its wall
time per step is at most 5 % above the baseline's. Exits 1 if either is
missed. Usage: python bench/bench_train.py [--quick] [--json] [--steps 50] [--sft-steps 60]
(--quick: 3 GRPO steps after 20 SFT steps, one baseline run; the run-time target scales with the steps).
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
from bench.report import Figure, finish  # noqa: E402

TARGET_RUN_S = 300.0
TARGET_OVERHEAD = 0.05


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall and process CPU time between optimiser steps (the same tiny callback in every run)."""

        def __init__(self):
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self._last = (0.0, 0.0)

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            now = (time.perf_counter(), time.process_time())
            self.wall.append(now[0] - self._last[0])
            self.cpu.append(now[1] - self._last[1])
            self._last = now

    return StepTimer()


def _tokens_per_step(history: list[dict]) -> list[float]:
    """TRL's running token count per step: equal across runs when their rollouts were the same."""
    return [entry["num_tokens"] for entry in history if "num_tokens" in entry]


def run_baseline(config, out: Path) -> dict:
    from trainers.grpo import build_grpo_trainer

    setup = build_grpo_trainer(config, out, with_logging=False)
    timer = step_timer()
    setup.trainer.add_callback(timer)
    started = time.perf_counter()
    setup.trainer.train()
    elapsed = time.perf_counter() - started
    setup.close()
    history = setup.trainer.state.log_history
    calls = [e["tools/call_frequency"] for e in history if "tools/call_frequency" in e]
    return {"train_s": elapsed, "wall": timer.wall, "cpu": timer.cpu, "tokens": _tokens_per_step(history),
            "tool_calls_per_episode": statistics.fmean(calls or [0.0])}


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
        run_id = grpo.run_grpo(config, store=store)
    finally:
        grpo.build_grpo_trainer = original
    run = store.get_run(run_id)
    rows = store.metrics_since(run_id)

    def run_mean(name: str) -> float:
        values = [r["value"] for r in rows if r["name"] == name]
        return statistics.fmean(values) if values else 0.0

    traces = [store.get_trace(t["id"]) for t in store.list_traces(run_id=run_id, limit=10 ** 6)]
    calls = [turn.tool_call for trace in traces for turn in trace.turns if turn.tool_call is not None]
    return {"train_s": run["summary"]["last_metrics"]["train_runtime"], "wall": timer.wall, "cpu": timer.cpu,
            "tokens": _tokens_per_step(built[0].trainer.state.log_history), "traces": len(traces),
            "metric_rows": len(rows), "checkpoints": len(store.list_checkpoints(run_id)),
            "tool_call_rate": run_mean("tools/call_rate"), "tool_failure_rate": run_mean("tools/failure_rate"),
            "sandbox_runs": len(calls), "sandbox_ok": sum(1 for call in calls if call.ok),
            "logging_main_thread_s": run["summary"]["logging_main_thread_s"]}


def paired_overhead(logged: list[float], before: list[float], after: list[float]) -> float:
    """Median over steps (after the warm-up step) of logged / mean(before, after) - 1."""
    ratios = [x / ((b + a) / 2) for x, b, a in list(zip(logged, before, after))[1:] if b + a > 0]
    return statistics.median(ratios) - 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 GRPO steps after 20 SFT steps, one baseline run (before) instead of two")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--sft-steps", type=int)
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.quick else 50)
    args.sft_steps = args.sft_steps or (20 if args.quick else 60)
    target_run_s = TARGET_RUN_S * args.steps / 50

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
    config = demo_grpo_config(demo, store.list_checkpoints(sft_run)[-1]["path"], args.steps)

    runs = {}
    # --quick drops the second baseline run (it pairs each logged step with the one before only)
    order = ("baseline (before)", "logged") if args.quick else ("baseline (before)", "logged", "baseline (after)")
    for name in order:
        print(f"[bench] {name}: {args.steps} GRPO steps ...", flush=True)
        if name == "logged":
            runs[name] = run_logged(config, store)
        else:
            runs[name] = run_baseline(config, home / name.split()[1].strip("()"))
    before, logged = runs["baseline (before)"], runs["logged"]
    after = runs.get("baseline (after)", before)
    same_rollouts = before["tokens"] == logged["tokens"] == after["tokens"]
    wall_overhead = paired_overhead(logged["wall"], before["wall"], after["wall"])
    cpu_overhead = paired_overhead(logged["cpu"], before["cpu"], after["cpu"])

    print()
    print(f"load average (other processes share the 2 cores): start {load_start:.1f}, end {os.getloadavg()[0]:.1f}")
    print(f"cold start (demo data + expert traces + {args.sft_steps} full-FT SFT steps): {cold_start_s:.1f} s")
    print(f"{'run':18} {'steps':>5} {'train s':>8} {'wall s/step':>11} {'cpu s/step':>10}")
    for name, result in runs.items():
        print(f"{name:18} {len(result['wall']):5d} {result['train_s']:8.1f} "
              f"{statistics.median(result['wall'][1:]):11.3f} {statistics.median(result['cpu'][1:]):10.3f}")
    print(f"same rollouts in all three runs: {same_rollouts}")
    print(f"logged run: {logged['metric_rows']} metric rows, {logged['traces']} traces, {logged['checkpoints']} "
          f"checkpoints; callback time on the training thread {logged['logging_main_thread_s']:.3f} s")
    print(f"code tool: run-mean tool-call rate {logged['tool_call_rate']:.2f} (episodes with a call), failure rate "
          f"{logged['tool_failure_rate']:.2f}; stored traces hold {logged['sandbox_runs']} sandbox runs, "
          f"{logged['sandbox_ok']} wrote an image; TRL tool calls per episode {before['tool_calls_per_episode']:.2f}")
    print(f"logging overhead per step (paired median): wall {wall_overhead:+.1%}, cpu {cpu_overhead:+.1%} "
          f"(target <= {TARGET_OVERHEAD:.0%}); logged run {logged['train_s']:.0f} s (target <= {target_run_s:.0f} s)")

    exercised = logged["sandbox_runs"] > 0 or before["tool_calls_per_episode"] > 0
    figures = [
        Figure("train_logging_overhead", wall_overhead * 100, "%", f"ours <= {TARGET_OVERHEAD:.0%} and same rollouts",
               wall_overhead <= TARGET_OVERHEAD and same_rollouts, baseline=0.0,
               note=f"wall per step, logged vs TRL without the callback (paired median); cpu {cpu_overhead:+.1%}; "
                    f"same rollouts in all three runs: {same_rollouts}"),
        Figure("train_run_seconds", logged["train_s"], "s", f"ours <= {target_run_s:.0f} s with tool calls",
               logged["train_s"] <= target_run_s and exercised,
               note=f"{args.steps} GRPO steps, logged; code tool exercised: {exercised}"),
    ]
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
