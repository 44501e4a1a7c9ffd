"""Benchmark: the shipped demo model's Must-reach figures, each against its baseline in the same run.

1. Held-out F1 (greedy, the real runner, tools live) on MAT-Coding-mini and
   MAT-Search-mini from the demo world (trainers.demo_model.evaluate): the
   demo model with its tools, against two baselines measured here: the same
   model without tools, and the untrained tiny model with tools.
2. Click-to-train (trainers.demo_model.grpo_config: the Train tab's LoRA-GRPO
   from the shipped start adapter, on the hidden-colour task): the evaluation's
   own noise first, i.e. the start policy's held-out answer F1 under --noise-seeds
   sampling seeds (the trainer's own held-out evaluation, nothing trained); then
   for each --seeds value one GRPO run, its held-out answer F1 and tool-call rate
   on degraded images at step 0 and at the end (same items, same evaluation seed),
   and its wall minutes.

Targets (exit 1 if missed): with tools beats both baselines on both benchmarks;
on every GRPO seed, answer F1 rises by >= 10 points and by >= 3x the noise std,
the degraded-image tool-call rate rises by >= 30 points, and the run takes <= 10 min.
Usage: python bench/bench_demo_model.py [--quick] [--json] [--limit 60] [--grpo-steps 16] [--seeds 0 1 2]
       [--noise-seeds 0 1 2 3 4] [--skip-f1]
(about 5 min of F1 evaluation, 2 min of noise evaluations and 5-10 min per GRPO seed on 2 cores;
--quick: 4 items per benchmark, the noise of 8 held-out items under 2 seeds, no GRPO run, about 2 minutes).
"""

import argparse
import dataclasses
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

TARGET_GRPO_MINUTES = 10.0
TARGET_F1_POINTS = 10.0
TARGET_NOISE_MULTIPLE = 3.0
TARGET_CALL_RATE_POINTS = 30.0
F1, CALL_RATE = "eval_rewards/answer_f1/mean", "eval_tools/call_rate_degraded"


def held_out_noise(config, seeds: list[int]) -> list[dict[str, float]]:
    """The start policy's held-out evaluation (the GRPO trainer's own, nothing trained) under each sampling seed."""
    from transformers import TrainerCallback

    from trainers.grpo import build_grpo_trainer

    class Keep(TrainerCallback):
        def __init__(self):
            self.logs: dict[str, float] = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.update(logs or {})

    with tempfile.TemporaryDirectory(prefix="bench-noise-") as output_dir:
        setup = build_grpo_trainer(config, Path(output_dir), with_logging=False)
        keep = Keep()
        setup.trainer.add_callback(keep)
        results = []
        try:
            for seed in seeds:
                keep.logs = {}
                setup.trainer.eval_seed = seed
                setup.trainer.evaluate()
                results.append({F1: keep.logs[F1], CALL_RATE: keep.logs.get(CALL_RATE, 0.0)})
        finally:
            setup.close()
    return results


def f1_figures(args, world, store, missed: list[str]) -> list[Figure]:
    from trainers.demo_model import evaluate
    from workbench.settings import DEMO_MODEL_DIR as MODEL_DIR

    figures = []
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
    return figures


def grpo_figures(args, world, store, missed: list[str]) -> list[Figure]:
    from trainers.demo_model import grpo_config
    from trainers.grpo import run_grpo
    from workbench.settings import DEMO_MODEL_DIR as MODEL_DIR

    base = grpo_config(str(MODEL_DIR), world, args.grpo_steps)
    if args.quick:
        base = dataclasses.replace(base, max_eval_items=8)
    load = os.getloadavg()[0]
    started = time.time()
    noise = held_out_noise(base, args.noise_seeds)
    scores = [100 * row[F1] for row in noise]
    noise_std = statistics.stdev(scores)
    print(f"start policy, held-out answer F1 under sampling seeds {args.noise_seeds}: "
          f"{', '.join(f'{s:.1f}' for s in scores)} (std {noise_std:.2f} points); tool-call rate on degraded "
          f"images {', '.join(f'{100 * row[CALL_RATE]:.0f}' for row in noise)} %; {time.time() - started:.0f} s")
    needed = max(TARGET_F1_POINTS, TARGET_NOISE_MULTIPLE * noise_std)
    figures = [Figure("demo_grpo_eval_noise_f1_std", noise_std, "F1 points", "reported",
                      True, note=f"std over {len(scores)} sampling seeds of the step-0 policy's held-out answer F1 "
                                 f"({base.max_eval_items or 40} items x {base.num_generations_eval} samples)")]
    for seed in args.seeds:
        config = dataclasses.replace(base, seed=seed)
        load = os.getloadavg()[0]
        started = time.time()
        run_id = run_grpo(config, store=store)
        minutes = (time.time() - started) / 60
        load = max(load, os.getloadavg()[0])
        curves = {name: [row["value"] for row in store.metrics_since(run_id, names=[name])] for name in (F1, CALL_RATE)}
        f1_start, f1_end = 100 * curves[F1][0], 100 * curves[F1][-1]
        rate_start, rate_end = 100 * curves[CALL_RATE][0], 100 * curves[CALL_RATE][-1]
        print(f"GRPO seed {seed}: held-out answer F1 {' -> '.join(f'{100 * v:.1f}' for v in curves[F1])}; "
              f"tool-call rate on degraded images {' -> '.join(f'{100 * v:.0f}' for v in curves[CALL_RATE])} %; "
              f"{minutes:.1f} min (load average up to {load:.1f})")
        f1_met = f1_end - f1_start >= needed
        rate_met = rate_end - rate_start >= TARGET_CALL_RATE_POINTS
        time_met = minutes <= TARGET_GRPO_MINUTES
        for met, line in ((f1_met, f"answer F1 {f1_start:.1f} -> {f1_end:.1f} (needs +{needed:.1f})"),
                          (rate_met, f"tool-call rate {rate_start:.0f} -> {rate_end:.0f} (needs +30)"),
                          (time_met, f"{minutes:.1f} min > {TARGET_GRPO_MINUTES:g}")):
            if not met:
                missed.append(f"GRPO seed {seed}: {line}")
        figures += [
            Figure(f"demo_grpo_seed{seed}_answer_f1", f1_end, "F1 points",
                   f"rise >= {TARGET_F1_POINTS:g} and >= {TARGET_NOISE_MULTIPLE:g}x noise std", f1_met,
                   baseline=f1_start, note=f"held-out answer F1 after {args.grpo_steps} steps vs step 0; needs "
                                           f"+{needed:.1f}"),
            Figure(f"demo_grpo_seed{seed}_tool_call_rate_degraded", rate_end, "%",
                   f"rise >= {TARGET_CALL_RATE_POINTS:g} points", rate_met, baseline=rate_start,
                   note="held-out tool-call rate on degraded images, end vs step 0"),
            Figure(f"demo_grpo_seed{seed}_minutes", minutes, "min", f"ours <= {TARGET_GRPO_MINUTES:g} min",
                   time_met, note=f"whole run incl. evaluations; load average up to {load:.1f} on 2 cores")]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 items per benchmark, noise of 8 held-out items under 2 seeds, no GRPO run")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--limit", type=int, help="held-out items per benchmark for the F1 figures (default 60)")
    parser.add_argument("--skip-f1", action="store_true", help="only the click-to-train figures")
    parser.add_argument("--grpo-steps", type=int, default=None, help="GRPO steps (default: click-to-train's)")
    parser.add_argument("--seeds", type=int, nargs="*", help="GRPO seeds (none: skip GRPO; default 0 1 2)")
    parser.add_argument("--noise-seeds", type=int, nargs="*", help="sampling seeds of the noise (default 0..4)")
    args = parser.parse_args()
    args.limit = args.limit or (4 if args.quick else 60)
    if args.seeds is None:
        args.seeds = [] if args.quick else [0, 1, 2]
    if args.noise_seeds is None:
        args.noise_seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    if args.grpo_steps is None:
        from trainers.demo_data import CLICK_TO_TRAIN_STEPS

        args.grpo_steps = CLICK_TO_TRAIN_STEPS
    os.environ["WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="bench-demo-")

    from workbench.store import Store
    from workbench.synth.demo_world import build_world

    world = build_world(Path(os.environ["WORKBENCH_HOME"]) / "demo-world")
    store = Store()
    missed: list[str] = []
    figures = [] if args.skip_f1 else f1_figures(args, world, store, missed)
    figures += grpo_figures(args, world, store, missed)
    for line in missed:
        print("MISSED:", line)
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
