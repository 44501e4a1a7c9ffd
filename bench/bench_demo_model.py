"""Benchmark: the shipped demo model's Must-reach figures, each against its baseline in the same run.

1. Held-out F1 (greedy, the real runner, tools live) on MAT-Coding-mini and
   MAT-Search-mini from the demo world (trainers.demo_model.evaluate): the
   demo model with its tools, against two baselines measured here: the same
   model without tools, and the untrained tiny model with tools.
2. GRPO from the demo model (trainers.demo_model.grpo_config, the shipped
   settings): held-out reward after training against the same run's step-0
   evaluation (same items, same evaluation seed), for each --seeds value, and
   the wall minutes of each run.

Targets (exit 1 if missed): with tools beats both baselines on both
benchmarks; every GRPO run ends above its step 0 within 10 minutes.
Usage: python bench/bench_demo_model.py [--quick] [--json] [--limit 60] [--grpo-steps 24] [--seeds 0]
(about 5 min of evaluation plus 10 min per GRPO seed on 2 cores; --quick: 4 items per
benchmark and no GRPO run, about a minute).
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import trainers  # noqa: F401,E402  (sets the OpenMP spin policy before torch loads)
from bench.report import Figure, finish  # noqa: E402

TARGET_GRPO_MINUTES = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 items per benchmark, no GRPO run")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--limit", type=int, help="held-out items per benchmark for the F1 figures (default 60)")
    parser.add_argument("--grpo-steps", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="*", help="GRPO seeds (none: skip GRPO; default 0)")
    args = parser.parse_args()
    args.limit = args.limit or (4 if args.quick else 60)
    if args.seeds is None:
        args.seeds = [] if args.quick else [0]
    os.environ["WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="bench-demo-")

    from trainers.demo_model import evaluate, grpo_config
    from trainers.grpo import run_grpo
    from workbench.settings import DEMO_MODEL_DIR as MODEL_DIR
    from workbench.store import Store
    from workbench.synth.demo_world import build_world

    world = build_world(Path(os.environ["WORKBENCH_HOME"]) / "demo-world")
    store = Store()
    missed, figures = [], []
    print(f"held-out F1, first {args.limit} items of each benchmark (greedy):")
    demo = evaluate(str(MODEL_DIR), world, store, True, args.limit)
    baselines = {"demo model without tools": evaluate(str(MODEL_DIR), world, store, False, args.limit),
                 "untrained tiny model with tools": evaluate("tiny", world, store, True, args.limit)}
    for benchmark in ("mat-coding", "mat-search"):
        f1 = demo[benchmark]["f1"]
        print(f"  {benchmark}: demo model with tools {f1:.1f}")
        for name, results in baselines.items():
            base = results[benchmark]["f1"]
            print(f"    vs {name} {base:.1f}: {f1 - base:+.1f} points")
            if f1 <= base:
                missed.append(f"{benchmark}: with tools {f1:.1f} <= {name} {base:.1f}")
        without_tools = baselines["demo model without tools"][benchmark]["f1"]
        untrained = baselines["untrained tiny model with tools"][benchmark]["f1"]
        figures.append(Figure(
            f"demo_model_{benchmark.replace('-', '_')}_f1", f1, "F1", "ours > both baselines",
            f1 > max(without_tools, untrained), baseline=max(without_tools, untrained),
            note=f"{args.limit} held-out items; baseline = the better of the demo model without tools "
                 f"({without_tools:.1f}) and the untrained tiny model with tools ({untrained:.1f})"))

    for seed in args.seeds:
        config = dataclasses.replace(grpo_config(str(MODEL_DIR), world, args.grpo_steps), seed=seed)
        started = time.time()
        run_id = run_grpo(config, store=store)
        minutes = (time.time() - started) / 60
        held_out = [row["value"] for row in store.metrics_since(run_id, names=["eval_reward"])]
        first, last = held_out[0], held_out[-1]
        print(f"GRPO seed {seed}: held-out reward {' -> '.join(f'{v:.3f}' for v in held_out)}; "
              f"end vs step 0 {last - first:+.3f} ({last / first:.3f}x) in {minutes:.1f} min")
        if last <= first or minutes > TARGET_GRPO_MINUTES:
            missed.append(f"GRPO seed {seed}: {first:.3f} -> {last:.3f} in {minutes:.1f} min")
        figures.append(Figure(
            f"demo_grpo_seed{seed}_eval_reward", last, "reward",
            f"ours > step 0 within {TARGET_GRPO_MINUTES:g} min", last > first and minutes <= TARGET_GRPO_MINUTES,
            baseline=first, note=f"held-out reward after {args.grpo_steps} steps vs step 0; {minutes:.1f} min"))
    for line in missed:
        print("MISSED:", line)
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
