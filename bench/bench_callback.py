"""Benchmark: what WorkbenchCallback costs a plain TRL GRPO step (a multi-turn run whose tool returns an image).

One run of a plain TRL script (tests/plain_trl_script.py: the tiny Qwen3-VL
model, a `tools=` tool returning an image, two reward functions), with and
without the callback in the same run: the callback gets the trainer's events
on every other step only, so each step with it sits between two steps
without it, under the same machine load and the same model. A step is timed
from `on_step_begin` to the end of its `on_log`, and on a step with the
callback that includes waiting for its writer thread to finish the step's
batch (traces built, images encoded, stored): the background work is charged
to its own step as if it were synchronous, an upper bound. Every step's
rollout has the same length here (the tool call is forced by the script), so
steps compare. Overhead = median over steps with the callback (after warm-up)
of its time / mean(step before, step after) - 1. Reported beside it,
insensitive to load: the callback's time on the training thread and its
writer thread's CPU time, each as a share of a step.

Target: at most 5 % of a step. Exits 1 when missed.
Usage: python bench/bench_callback.py [--quick] [--json] [--steps 25]
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

TARGET_OVERHEAD = 0.05


def every_other_step(callback):
    """A callback that passes the trainer's events to `callback` on odd steps only, and times every step."""
    from transformers import TrainerCallback

    class EveryOtherStep(TrainerCallback):
        def __init__(self):
            self.seconds: dict[int, float] = {}
            self.with_callback: set[int] = set()
            self._began = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            callback.on_train_begin(args, state, control, **kwargs)

        def on_step_begin(self, args, state, control, **kwargs):
            self._began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if (state.global_step) % 2:
                self.with_callback.add(state.global_step)
                callback.on_step_end(args, state, control, **kwargs)

        def on_log(self, args, state, control, logs=None, **kwargs):
            step = state.global_step
            if step in self.seconds or "loss" not in (logs or {}):
                return  # the end-of-training summary log
            if step in self.with_callback:
                callback.on_log(args, state, control, logs=logs, **kwargs)
                callback.flush()  # charge the writer thread's work for this step to this step
            self.seconds[step] = time.perf_counter() - self._began

        def on_train_end(self, args, state, control, **kwargs):
            callback.on_train_end(args, state, control, **kwargs)

    return EveryOtherStep()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="11 steps")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()
    steps = args.steps or (11 if args.quick else 25)
    home = Path(tempfile.mkdtemp(prefix="bench-callback-"))
    os.environ["WORKBENCH_HOME"] = str(home / "home")
    from tests.plain_trl_script import plain_grpo_trainer
    from workbench.integrations.trl_callback import WorkbenchCallback
    from workbench.store import Store

    trainer = plain_grpo_trainer(home / "out", steps=steps, callbacks=[])
    callback = WorkbenchCallback(run_name="bench", trainer=trainer)  # called by the wrapper, so given its trainer
    timer = every_other_step(callback)
    trainer.add_callback(timer)
    print(f"[bench] {steps} GRPO steps, the callback on every other step ...", flush=True)
    trainer.train()
    seconds = timer.seconds
    ratios = [seconds[s] / ((seconds[s - 1] + seconds[s + 1]) / 2) - 1
              for s in sorted(timer.with_callback) if s > 1 and s - 1 in seconds and s + 1 in seconds]
    overhead = statistics.median(ratios)
    without = [seconds[s] for s in seconds if s not in timer.with_callback and s > 1]
    per_step = statistics.median(without)
    logged = len(timer.with_callback)
    main_share = callback.main_thread_seconds / logged / per_step
    thread_share = callback.background_cpu_seconds / logged / per_step
    store = Store()
    traces = store.count_traces(callback.run_id)
    print(f"\nload average: {os.getloadavg()[0]:.1f}; median step without the callback {per_step:.3f} s, with "
          f"{statistics.median(seconds[s] for s in timer.with_callback if s > 1):.3f} s")
    print("overhead per step with the callback: " + ", ".join(f"{r:+.1%}" for r in ratios))
    print(f"load-insensitive: training thread {main_share:.3%} of a step, writer thread {thread_share:.2%} of a step "
          f"(CPU); {traces} traces stored for {logged} steps; errors {callback.errors}")
    figures = [
        Figure("callback_overhead", overhead * 100, "%", f"ours <= {TARGET_OVERHEAD:.0%}",
               overhead <= TARGET_OVERHEAD and traces == 2 * logged and not callback.errors, baseline=0.0,
               note=f"step with WorkbenchCallback (its writer's work included) vs the steps beside it without, same "
                    f"run; median of {len(ratios)}; training thread {main_share:.3%} + writer thread "
                    f"{thread_share:.2%} of a step (CPU)"),
    ]
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
