"""Reproduce the embedded demo model: `python -m trainers.demo_model --out workbench/demo_assets/model`.

Steps, all on CPU and offline: build the synthetic world (MAT-Coding-mini,
MAT-Search-mini with a train world and an unseen held-out world), replay the
scripted expert through the real tools to record correct traces, fine-tune
the embedded tiny model on them with TRL's SFTTrainer (full fine-tune),
copy the final weights to `--out`, then evaluate on the held-out splits with
and without tools, next to the untrained tiny model, and write the figures
into the model card. Seeds are fixed, so a rerun gives the same data.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from trainers.config import SftJobConfig
from trainers.sft import run_sft
from workbench import settings
from workbench.evaluation import EvalConfig, run_evaluation
from workbench.runner import RunnerConfig
from workbench.store import Store
from workbench.synth.demo_world import World, build_world, record_expert_traces


def train(world: World, store: Store, *, steps: int, learning_rate: float, batch_size: int) -> Path:
    """Expert traces -> SFT; returns the folder of the trained model."""
    expert_run = record_expert_traces(world, store)
    config = SftJobConfig(model="tiny", finetune="full", trace_runs=[expert_run], min_reward=1.0,
                          tools=["code", "search"], max_steps=steps, learning_rate=learning_rate,
                          per_device_batch_size=batch_size, save_steps=0, save_total_limit=1,
                          run_name="demo model: SFT on expert traces")
    run_id = run_sft(config, store=store)
    checkpoints = store.list_checkpoints(run_id)
    if not checkpoints:
        raise RuntimeError(f"SFT run {run_id} recorded no checkpoint")
    return Path(checkpoints[-1]["path"])


def evaluate(model: str, world: World, store: Store, tools: bool, limit: int | None) -> dict:
    """Held-out F1/EM on both mini benchmarks, with the tools or without any."""
    results = {}
    for benchmark, data, tool in (("mat-coding", world.coding("test"), "code"),
                                  ("mat-search", world.search("test"), "search")):
        runner = RunnerConfig(tools=(tool,) if tools else (), layout="chat", max_new_tokens=160)
        config = EvalConfig(benchmark=benchmark, data=str(data), model=model, limit=limit,
                            corpus=str(world.corpus("test")),
                            name=f"held-out {benchmark} {'with' if tools else 'without'} tools: {Path(model).name}")
        run_id = run_evaluation(config, runner, store=store)
        summary = store.get_run(run_id)["summary"]
        results[benchmark] = {"f1": summary["all_f1"], "em": summary["all_em"], "n": summary["n"], "run": run_id}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the trained model")
    parser.add_argument("--world", default=None, help="folder for the generated world (default: a temp folder)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N held-out items")
    args = parser.parse_args(argv)
    started = time.time()
    world = build_world(args.world or settings.home() / "demo-world")
    store = Store()
    trained = train(world, store, steps=args.steps, learning_rate=args.learning_rate, batch_size=args.batch_size)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns("optimizer.pt", "scheduler.pt", "rng_state*",
                                                                 "trainer_state.json", "training_args.bin"))
    figures = {
        "demo model, with tools": evaluate(str(out), world, store, True, args.eval_limit),
        "demo model, without tools": evaluate(str(out), world, store, False, args.eval_limit),
        "untrained tiny model, with tools": evaluate("tiny", world, store, True, args.eval_limit),
    }
    (out / "figures.json").write_text(json.dumps({"minutes": round((time.time() - started) / 60, 1),
                                                  "steps": args.steps, "results": figures}, indent=1))
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
