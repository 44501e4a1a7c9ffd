"""Remaking the shipped demo items and traces (a script: nothing at run time imports it).

`workbench/demo/` (committed; paths in `workbench.settings`) holds:
- `model/`: the embedded demo model (made by `python -m trainers.demo_model`, model card in its README.md);
- `items/`: a handful of held-out MAT-Coding-mini and MAT-Search-mini items, one per kind of problem,
  with the held-out world's search corpus;
- `traces.jsonl` (+ `traces.jsonl.images/`): the demo model's own episodes on those items, with the
  real tools, as `workbench.trace_io` exports them;
- `grpo_run/`: a real multi-turn GRPO run from the demo model on this CPU (run row, every metric
  incl. the held-out eval_reward, sampled rollout groups), made by `python -m trainers.demo_model`.

`python -m workbench.synth.demo_assets --world DIR` re-picks the items from a
demo world and re-records the traces with the current model (greedy, so the
same model gives the same traces). The items are picked by kind, never by
whether the model gets them right.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from workbench import settings

# One held-out coding item per kind of problem, in this order.
CODING_KINDS = [["none"], ["rotation180"], ["rotation90"], ["dark"], ["overexposure"], ["blur"], ["noise"],
                ["crop"], ["rotation90", "dark"]]
SEARCH_KINDS = ["city", "founded", "country", "founder"]


def _copy_records(records: list[dict], source: Path, keys: tuple[str, ...]) -> list[dict]:
    (settings.DEMO_ITEMS_DIR / "images").mkdir(parents=True, exist_ok=True)
    for record in records:
        for key in keys:
            shutil.copyfile(source / record[key], settings.DEMO_ITEMS_DIR / record[key])
    return records


def pick_items(world_root: str | Path) -> None:
    """Copy one held-out item per kind (and the held-out corpus) from a demo world into settings.DEMO_ITEMS_DIR."""
    from workbench.synth.demo_world import World

    world = World(Path(world_root))
    if settings.DEMO_ITEMS_DIR.exists():
        shutil.rmtree(settings.DEMO_ITEMS_DIR)
    coding = json.loads(world.coding("test").read_text(encoding="utf-8"))
    picked = [next(r for r in coding if r["type"] == kind) for kind in CODING_KINDS]
    _copy_records(picked, world.coding("test").parent, ("ori_image_path", "processed_image_path"))
    settings.DEMO_CODING_ITEMS.write_text(json.dumps(picked, indent=1), encoding="utf-8")
    search = json.loads(world.search("test").read_text(encoding="utf-8"))
    picked = [next(r for r in search if r["kind"] == kind) for kind in SEARCH_KINDS]
    _copy_records(picked, world.search("test").parent, ("image_path",))
    settings.DEMO_SEARCH_ITEMS.write_text(json.dumps(picked, indent=1), encoding="utf-8")
    shutil.copyfile(world.corpus("test"), settings.DEMO_CORPUS)


def run_demo_items(backend, benchmark: str, store, run_id: str | None = None) -> list:
    """The backend's episodes (chat layout, the benchmark's tool, the shipped corpus) on one benchmark's demo
    items, each scored with F1/EM."""
    from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig
    from workbench.agent.tools import build_tools
    from workbench.benchmarks.loaders import load_benchmark
    from workbench.benchmarks.scoring import f1_em

    path, tool = {"mat-coding": (settings.DEMO_CODING_ITEMS, "code"),
                  "mat-search": (settings.DEMO_SEARCH_ITEMS, "search")}[benchmark]
    items = [AgentItem(item.question, [item.image], item_id=f"{benchmark}-{item.id}", gold=item.answers)
             for item in load_benchmark(benchmark, path)]

    def score(trace, item):
        f1, em = f1_em(trace.final_answer, item.gold, benchmark)
        return {"f1": f1, "em": em}

    runner = AgentRunner(backend, build_tools((tool,), corpus=settings.DEMO_CORPUS),
                         RunnerConfig(tools=(tool,), layout="chat", max_new_tokens=256),
                         store=store, run_id=run_id, score=score)
    return runner.run(items)


def record_traces(model: str | Path | None = None) -> int:
    """Run the model on the demo items with the real tools and export the traces; returns how many."""
    from workbench.backends import resolve_model
    from workbench.store import Store
    from workbench.trace_io import export_traces

    backend = resolve_model(str(model or settings.demo_model_dir()))
    backend.model_id = settings.DEMO_MODEL_ID
    store = Store()
    run_id = store.create_run("demo traces", "eval", model_id=settings.DEMO_MODEL_ID)
    traces = [trace for benchmark in ("mat-coding", "mat-search")
              for trace in run_demo_items(backend, benchmark, store, run_id)]
    return export_traces(store, traces, settings.DEMO_TRACES_FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", help="demo world folder to pick items from (keeps the current items if absent)")
    parser.add_argument("--model", help="model folder (default: the demo model)")
    args = parser.parse_args(argv)
    if args.world:
        pick_items(args.world)
    os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="demo-assets-"))
    count = record_traces(args.model)
    print(f"{count} traces -> {settings.DEMO_TRACES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
