"""Reproduce the embedded demo model and its shipped runs: `python -m trainers.demo_model`.

Steps, all on CPU and offline, seeds fixed:
1. build the synthetic world (MAT-Coding-mini; MAT-Search-mini questions
   from 100 small train worlds and an unseen held-out world; the corpora);
2. replay the scripted expert through the real tools to record correct
   traces; build a fresh tiny Qwen2.5-VL (workbench.backends.tiny, same
   architecture as the embedded one) whose tokenizer also learned the
   traces' text, and fine-tune it on them with TRL's SFTTrainer (full
   fine-tune); then a long search-only "copy drill" (8,000 episodes from
   2,000 more worlds, constant learning rate) until the model copies names
   out of the results, and a search drill mixed with the first stage's
   traces so coding comes back; the weights go to `--out` (default
   workbench/demo/model);
3. evaluate held-out F1/EM with and without tools, next to the untrained
   tiny model;
4. the click-to-train start adapter (`--start-steps`): LoRA SFT of that
   model on the hidden-colour train split where the expert answers at once
   on most items (record_start_traces), so the start policy mostly does not
   call its code tool; saved to workbench/demo/start_adapter;
5. run the Train tab's click-to-train LoRA-GRPO (live code tool) from that
   adapter with held-out answer F1 and tool-call rate logged at each
   evaluation (`--grpo-task search`: full GRPO with the search tool on the
   search rl split, from the model), and export the run to workbench/demo/grpo_run;
6. write figures.json and the model card (README.md) beside the weights.
`--from-model DIR` starts from DIR instead of the first SFT stage (the SFT
stages listed in DIR/figures.json, if any, carry on). The shipped start
adapter and demo-grpo run were remade from the shipped model with
`python -m trainers.demo_model --from-model workbench/demo/model --copy-steps 0
--drill-steps 0 --skip-eval --start-steps 100 --grpo-steps 12`. The demo items and
traces are then re-recorded by `python -m workbench.synth.demo_assets --world DIR`.
"""

import argparse
import dataclasses
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

from trainers.config import GrpoJobConfig, SftJobConfig
from trainers.demo_data import CLICK_TO_TRAIN_STEPS, TINY_MEMORY, click_to_train_config
from trainers.grpo import run_grpo
from trainers.sft import run_sft
from workbench import settings
from workbench.agent.runner import RunnerConfig
from workbench.benchmarks import mat_search_mini, mini_expert
from workbench.benchmarks.evaluation import EvalConfig, run_evaluation
from workbench.store import Store
from workbench.synth.demo_world import World, build_search_drill, build_world, record_expert_traces, record_start_traces
from workbench.trace_io import export_run_bundle

TOKENIZER_VOCAB = 2048  # the world's syllables, tags and code idioms become single tokens
KEEP_OUT = ("optimizer.pt", "scheduler.pt", "rng_state*", "trainer_state.json", "training_args.bin")


def tokenizer_text(store: Store, expert_run: str, worlds: int = 200) -> str:
    """Text the demo tokenizer learns from: the expert's coding traces, and search text from many other worlds.

    Search text comes from `worlds` unrelated generated worlds, so the
    syllables of names become tokens but no company of the train world does;
    the held-out world's names then split into tokens the way train names do.
    """
    lines = []
    for row in store.list_traces(run_id=expert_run, limit=10 ** 6):
        trace = store.get_trace(row["id"])
        if not (trace.item_id or "").startswith("coding"):
            continue
        for message in trace.messages:
            content = message["content"]
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            lines += [block["text"] for block in blocks if block.get("type") == "text" and block.get("text")]
    for seed in range(10_000, 10_000 + worlds):
        companies = mat_search_mini.build_world(seed)
        lines += [doc["text"] for doc in mat_search_mini.corpus_documents(companies)]
        for company, kind in zip(companies, itertools.cycle(mat_search_mini.QUESTIONS)):
            lines += mini_expert.search_turns(company, kind, str(getattr(company, mat_search_mini.QUESTIONS[kind][1])))
            lines.append(mat_search_mini.QUESTIONS[kind][0])
    return "\n".join(lines) + "\n"


def _sft(store: Store, model: str, runs: list[str], steps: int, learning_rate: float, batch_size: int,
         name: str, lr_scheduler: str = "linear") -> Path:
    config = SftJobConfig(model=model, finetune="full", trace_runs=runs, min_reward=1.0, tools=["code", "search"],
                          max_steps=steps, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
                          save_steps=200, save_total_limit=0, warmup_steps=30, lr_scheduler_type=lr_scheduler,
                          run_name=name, max_pixels=0, **TINY_MEMORY)
    run_id = run_sft(config, store=store)
    checkpoints = store.list_checkpoints(run_id)
    if not checkpoints:
        raise RuntimeError(f"SFT run {run_id} recorded no checkpoint")
    return Path(checkpoints[-1]["path"])


def train(world: World, store: Store, *, steps: int, learning_rate: float, batch_size: int) -> tuple[Path, str]:
    """Expert traces -> a fresh tiny model whose tokenizer knows the world -> SFT; returns (model, expert run)."""
    from workbench.backends.tiny import build_tiny_model

    expert_run = record_expert_traces(world, store)
    base = build_tiny_model(settings.models_dir() / "demo-base", tokenizer_text=tokenizer_text(store, expert_run),
                            vocab_size=TOKENIZER_VOCAB)
    model = _sft(store, str(base), [expert_run], steps, learning_rate, batch_size, "demo model: SFT on expert traces")
    return model, expert_run


COPY_DRILL = {"count": 8000, "worlds": 2000, "seed": 7000}  # the copy drill's questions (STAGE_DATA says it too)


def copy_drill(model: Path, world: World, store: Store, *, steps: int, learning_rate: float,
               batch_size: int) -> Path:
    """Search-only SFT on 8,000 episodes from 2,000 more worlds at a constant learning rate. Copying a name
    out of the results appears late and suddenly (after ~20,000 examples in a text-only probe), so this
    stage is long and undiluted; the next stage mixes coding back in."""
    questions = build_search_drill(world, **COPY_DRILL, name="search_copy")
    run = record_expert_traces(world, store, coding=False, search_file=questions, name="expert traces (copy drill)")
    return _sft(store, str(model), [run], steps, learning_rate, batch_size, "demo model: search copy drill SFT",
                lr_scheduler="constant")


def drill_search(model: Path, world: World, store: Store, expert_run: str | None, *, steps: int,
                 learning_rate: float, batch_size: int) -> Path:
    """Last SFT stage: 2,400 more search episodes from 400 more worlds (with the first stage's traces, so
    coding is not forgotten). Copying a name out of the results is what a 4-layer model learns last."""
    drill = record_expert_traces(world, store, coding=False, search_file=build_search_drill(world),
                                 name="expert traces (search drill)")
    runs = [drill, expert_run or record_expert_traces(world, store)]
    return _sft(store, str(model), runs, steps, learning_rate, batch_size, "demo model: search drill SFT")


def evaluate(model: str, world: World, store: Store, tools: bool, limit: int | None) -> dict:
    """Held-out F1/EM on both mini benchmarks, with the tools or without any."""
    results = {}
    for benchmark, data, tool in (("mat-coding", world.coding("test"), "code"),
                                  ("mat-search", world.search("test"), "search")):
        runner = RunnerConfig(tools=(tool,) if tools else (), layout="chat", max_new_tokens=256)
        config = EvalConfig(benchmark=benchmark, data=str(data), model=model, limit=limit,
                            corpus=str(world.corpus("test")),
                            name=f"held-out {benchmark} {'with' if tools else 'without'} tools: {Path(model).name}")
        run_id = run_evaluation(store, config, runner)
        summary = store.get_run(run_id)["summary"]
        results[benchmark] = {"f1": summary["all_f1"], "em": summary["all_em"], "n": summary["n"], "run": run_id,
                              "summary": summary}
    return results


START_DIRECT_SHARE = 0.65  # the start adapter's SFT data: the expert answers at once on this share of items


def start_adapter(model: Path, world: World, store: Store, out: Path, *, steps: int, learning_rate: float,
                  batch_size: int, direct_share: float = START_DIRECT_SHARE) -> dict:
    """Click-to-train's starting policy: a LoRA adapter on `model`, SFT on the hidden-colour train split with
    the code tool offered, where the expert answers at once, from the image as it is, on `direct_share` of the
    items. It knows its tool but mostly does not call it, and a guessed colour is mostly wrong: the decision
    GRPO then learns. Saved (adapter files only) to `out`; returns its figures entry."""
    traces = record_start_traces(world, store, direct_share=direct_share)
    config = SftJobConfig(model=str(model), finetune="lora", trace_runs=[traces], min_reward=1.0, tools=["code"],
                          max_steps=steps, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
                          save_steps=0, warmup_steps=10, run_name="demo start adapter: LoRA SFT, mostly no tool",
                          max_pixels=0, **TINY_MEMORY)
    started = time.time()
    run_id = run_sft(config, store=store)
    checkpoints = store.list_checkpoints(run_id)
    if not checkpoints:
        raise RuntimeError(f"SFT run {run_id} recorded no checkpoint")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(checkpoints[-1]["path"], out, ignore=shutil.ignore_patterns(*KEEP_OUT))
    describe_adapter(out, model)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    return {"run": run_id, "trace_run": traces, "steps": steps, "learning_rate": learning_rate,
            "batch_size": batch_size, "direct_share": direct_share, "minutes": round((time.time() - started) / 60, 1),
            "weights_mb": round(size / 1e6, 2), "lora_r": config.lora_r, "lora_target": config.lora_target}


def describe_adapter(out: Path, model: Path) -> None:
    """The adapter names its base model by a path inside the checkout (not the machine it was made on), and its
    README says what it is instead of PEFT's blank template."""
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    base = Path(model).resolve()
    root = settings.REPO_ROOT.resolve()
    config["base_model_name_or_path"] = str(base.relative_to(root)) if base.is_relative_to(root) else str(model)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(
        "# Click-to-train start adapter\n\nA LoRA adapter on the demo model (`workbench/demo/model`): the starting "
        "policy of the Train tab's \"Fill in a demo run\", which knows its code tool but mostly answers without it. "
        "How it was made and what GRPO does from it: the demo model's card, `workbench/demo/model/README.md`; "
        "remade by `python -m trainers.demo_model` (see its docstring).\n", encoding="utf-8")


def grpo_config(model: str, world: World, steps: int = CLICK_TO_TRAIN_STEPS,
                adapter: Path | str | None = None) -> GrpoJobConfig:
    """The Train tab's click-to-train LoRA-GRPO (`trainers.demo_data.click_to_train_config`) from the start
    adapter on the world's hidden-colour rl split, held out on its hidden_test split, saving only the end and
    every 4th step's rollouts."""
    config = click_to_train_config(model, str(world.hidden("rl")), str(world.hidden("test")), steps,
                                   init_adapter=str(adapter or settings.DEMO_START_ADAPTER))
    return dataclasses.replace(config, save_steps=0, save_total_limit=1, log_traces_every=4,
                               run_name="demo GRPO: LoRA, code tool, from the start adapter")


def search_grpo_config(model: str, world: World, steps: int, adapter: Path | None = None) -> GrpoJobConfig:
    """GRPO on search (full fine-tune from the model, no start adapter): questions from the search rl split's
    100 worlds (each episode searches its own world's corpus), held-out reward on all 60 questions of the
    unseen held-out world, 2 samples each."""
    return dataclasses.replace(grpo_config(model, world, steps), data_files=[str(world.search("rl"))],
                               tools=["search"], eval_data_files=[str(world.search("test"))], init_adapter=None,
                               finetune="full", learning_rate=6e-5, beta=0.04, temperature=1.0, num_generations=4,
                               eval_steps=8, run_name="demo GRPO: multi-turn, search tool, from the demo model")


GRPO_CONFIGS = {"coding": grpo_config, "search": search_grpo_config}
GRPO_FACTS = ("tools", "learning_rate", "temperature", "max_steps", "num_generations", "per_device_train_batch_size",
              "eval_steps", "num_generations_eval", "finetune", "beta", "seed", "lora_r", "init_adapter")


HELD_OUT_SERIES = {"eval_reward": "eval_reward", "eval_answer_f1": "eval_rewards/answer_f1/mean",
                   "eval_call_rate_degraded": "eval_tools/call_rate_degraded"}


def grpo(model: str, world: World, store: Store, steps: int, bundle: Path, task: str = "coding",
         adapter: Path | None = None) -> dict:
    config = GRPO_CONFIGS[task](model, world, steps, adapter)
    started = time.time()
    run_id = run_grpo(config, store=store)
    minutes = (time.time() - started) / 60
    series = {key: [(row["step"], row["value"]) for row in store.metrics_since(run_id, names=[name])]
              for key, name in HELD_OUT_SERIES.items()}
    if bundle.exists():
        shutil.rmtree(bundle)
    export_run_bundle(store, run_id, bundle)
    facts = {name: getattr(config, name) for name in GRPO_FACTS}
    held_out_rows = len(json.loads(Path(config.eval_data_files[0]).read_text()))
    facts["eval_items"] = min(held_out_rows, config.max_eval_items or held_out_rows)
    return {"run": run_id, "minutes": round(minutes, 1), **series, "config": facts}


def _f1_table(results: dict) -> list[str]:
    rows = ["| model | tools | MAT-Coding-mini F1 / EM | MAT-Search-mini F1 / EM |", "|---|---|---|---|"]
    for name, by_benchmark in results.items():
        model, _, tools = name.partition(", ")
        cells = [f"{by_benchmark[b]['f1']:.1f} / {by_benchmark[b]['em']:.1f} (n={by_benchmark[b]['n']})"
                 for b in ("mat-coding", "mat-search")]
        rows.append(f"| {model} | {tools} | {cells[0]} | {cells[1]} |")
    return rows


def _per_type_table(results: dict) -> list[str]:
    with_tools = results["demo model, with tools"]["mat-coding"]["summary"].get("per_type", {})
    without = results["demo model, without tools"]["mat-coding"]["summary"].get("per_type", {})
    rows = ["| problem | n | F1 with tools | F1 without tools |", "|---|---|---|---|"]
    for label in sorted(with_tools):
        rows.append(f"| {label} | {with_tools[label]['n']} | {with_tools[label]['f1']:.1f} | "
                    f"{without.get(label, {}).get('f1', 0.0):.1f} |")
    return rows


def write_model_card(out: Path, figures: dict) -> None:
    """README.md beside the weights: how the model was made and what it can and cannot do, from the figures."""
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        parameters = sum(_count(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118  (safetensors handles are not iterable)
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    results = figures.get("results", {})
    lines = [
        "# Demo model: a tiny Qwen2.5-VL trained on the Visual-ARFT demo world", "",
        "The workbench's default model (`demo`). It exists so that a machine with no GPU and no internet shows "
        "real multi-turn tool use: it names what is wrong with an image, writes Python that the sandbox runs, "
        "reads the repaired image and answers; or searches the local corpus for the emblem it sees, searches "
        "again for the company it found when the question needs a second fact, and copies the answer out of the "
        "results (right for about two in five held-out questions). "
        "It only knows the synthetic demo world (workbench/synth). It is not a general vision-language model.", "",
        "## What it is",
        f"- Architecture: Qwen2.5-VL (transformers `Qwen2_5_VLForConditionalGeneration`), built by "
        f"`workbench.backends.tiny`: text 4 layers, hidden 256, 4 heads / 2 KV heads; vision 2 layers, hidden 128. "
        f"{parameters / 1e6:.1f} M parameters, {size_mb:.1f} MB of float32 weights.",
        "- Tokenizer: byte-level BPE (about 2k tokens) learned from the built-in text, the expert's coding traces "
        "and the search text of 200 unrelated generated worlds (so name syllables are tokens, no train-world "
        "company is), with the Qwen special tokens and the protocol tags.",
        "- Images: 112 x 112 pixels at most, i.e. 16 image tokens per image.", "",
        "## How it was made (CPU only, offline, seeds fixed)",
        "- Commands that made it, in order: " + "; ".join(f"`{c}`" for c in figures.get("commands", []))
        + f" (`python -m trainers.demo_model` with its defaults runs all stages in one go; the last SFT stage "
        f"took {figures.get('sft_minutes', '?')} min on 2 CPU cores).",
        "- Data: `workbench.synth.demo_world.build_world` (seed 0): 800 MAT-Coding-mini train items, 600 "
        "MAT-Search-mini train questions from 100 small worlds (36 companies each, own corpus); held-out: 100 "
        "coding items (other seed) and 60 search questions on an unseen world with its own corpus; GRPO's prompts: "
        "400 more coding items (a third seed) that no SFT stage saw.",
        "- Traces: a scripted expert (`workbench.benchmarks.mini_expert`) replayed through the real runner with the "
        "real "
        "code sandbox and local search; every fourth coding item also without tools (direct answer).",
        "- Training: TRL SFTTrainer, full fine-tune, assistant-only loss, 30 warm-up steps, each trace with the "
        "system prompt it was recorded with. SFT stages, in order:",
        *[f"  {number}. {stage['name']}: {stage['steps']} steps, batch {stage['batch_size']}, learning rate "
          f"{stage['learning_rate']} ({stage['schedule']}), on {stage['data']}. {stage.get('note', '')}".rstrip()
          for number, stage in enumerate(figures.get("stages", []), start=1)], "",
        "## Held-out results (greedy, chat layout, `python -m workbench eval`; the first n held-out items)", "",
        *_f1_table(results), "",
    ]
    if results:
        lines += ["MAT-Coding-mini by problem (demo model):", "", *_per_type_table(results), ""]
    lines += _click_to_train_lines(figures)
    lines += [
        "## What it cannot do",
        "- Read words or numbers: at 16 image tokens it sees colours, shapes, arrow directions and where things "
        "are, not text. Questions outside the demo world's kinds (a shape's colour, its kind, an arrow's "
        "direction, a company's city / year / country / founder) get made-up answers.",
        "- Name the problem reliably: its `<problem>` label set is often wrong (rotations are its weakest kind), "
        "though the code it then writes usually runs and the answer is often right anyway.",
        "- Copy out of search results reliably: its queries are sensible (the colour and shape of the emblem it "
        "sees), but the name or year it copies is often a near miss (a year a digit off, a name with one wrong "
        "syllable), and a wrong company name in its second query sends it to the wrong fact. Copying an unseen "
        "name out of the context is what this 4-layer model learned last: nothing in the first two stages, and "
        "only after ~20,000 search episodes in the copy drill.",
        "- Work in the single_user layout or the native tool-call protocol: it was trained on the chat layout "
        "with tags only.", "",
        "Figures: figures.json (same numbers, plus the run ids in the store that made them).", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _series(points: list) -> str:
    return ", ".join(f"step {step}: {value:.2f}" for step, value in points)


def _click_to_train_lines(figures: dict) -> list[str]:
    """The card's sections on the click-to-train start adapter and the shipped GRPO run from it."""
    lines: list[str] = []
    start = figures.get("start_adapter")
    if start:
        lines += ["## Click-to-train start adapter (workbench/demo/start_adapter)", "",
                  f"A LoRA adapter (r {start['lora_r']}, the language model's attention and MLP projections, "
                  f"{start['weights_mb']} MB) on this model: the starting policy of the Train tab's \"Fill in a demo "
                  "run\". It knows its code tool but mostly answers without it. Made by `trainers.demo_model."
                  f"start_adapter` (run `{start['run']}`, {start['minutes']} min): LoRA SFT, {start['steps']} steps, "
                  f"batch {start['batch_size']}, learning rate {start['learning_rate']}, on the expert's traces "
                  "(run `" + start["trace_run"] + "`) of the 400 items of the hidden-colour train split "
                  "(`mat_coding_mini.generate_hidden_colours`: the colour of a shape on a dark or washed-out card, "
                  "blurred or noisy on top for some, or of one of four small shapes in a box; the code tool "
                  f"offered), where the expert answers at once from the image as it is on {start['direct_share']:.0%} "
                  "of the items (drawn at random) and repairs the image first on the rest.", ""]
    grpo = figures.get("grpo")
    if not grpo:
        return lines
    facts = grpo["config"]
    samples, items = facts["num_generations_eval"] or facts["num_generations"], facts["eval_items"]
    prompts = facts["per_device_train_batch_size"] // facts["num_generations"]
    if facts.get("init_adapter"):
        lines += ["## GRPO from the start adapter: the shipped `demo-grpo` run", "",
                  f"The Train tab's click-to-train run (`trainers.demo_data.click_to_train_config`, through "
                  f"`trainers.demo_model.grpo_config`; run `{grpo['run']}`), {grpo['minutes']} min on the CPU: "
                  f"LoRA-GRPO with the live code tool, {prompts} prompts x {facts['num_generations']} samples per "
                  f"step at temperature {facts['temperature']}, "
                  f"learning rate {facts['learning_rate']}, KL beta {facts['beta']}, {facts['max_steps']} steps, "
                  "prompts from the hidden-colour rl split (400 items no SFT stage saw); held out: "
                  f"{samples} samples on each of {items} held-out items (the hidden_test split) with one fixed "
                  f"sampling seed, every {facts['eval_steps']} steps.",
                  f"- held-out answer F1: {_series(grpo.get('eval_answer_f1', []))}",
                  f"- held-out tool-call rate on degraded images: {_series(grpo.get('eval_call_rate_degraded', []))}",
                  f"- held-out reward (eval_reward): {_series(grpo.get('eval_reward', []))}", ""]
        if grpo.get("notes"):
            lines += [grpo["notes"], ""]
        earlier = figures.get("earlier_grpo")
        if earlier:
            lines += [f"Before it, click-to-train was a full fine-tune of this model on general MAT-Coding-mini items "
                      f"(run `{earlier['run']}`, {earlier['minutes']} min): held-out reward "
                      f"{_series(earlier['eval_reward'])}, a rise about the size of its evaluation's own noise "
                      "(figures.json keeps it, with the settings tried then, under earlier_grpo).", ""]
        if grpo.get("sweep"):  # a markdown table of the settings tried, written by hand into figures.json
            lines += ["Settings tried (held-out answer F1 / tool-call rate on degraded images at each "
                      "evaluation):", "", *grpo["sweep"], ""]
    else:
        lines += ["## GRPO from this model", "",
                  f"Multi-turn GRPO with the live {', '.join(facts['tools'])} tool (run `{grpo['run']}`), "
                  f"{grpo['minutes']} min on the CPU. Mean reward of {samples} samples on each of {items} held-out "
                  f"items (eval_reward): {_series(grpo['eval_reward'])}.", ""]
    return lines


STAGE_DATA = {
    "sft": "the expert traces: 800 coding items (a quarter again without tools) and 600 search questions from "
           "100 worlds",
    "copy": f"{COPY_DRILL['count']:,} search episodes (only) from {COPY_DRILL['worlds']:,} more worlds",
    "drill": "2,400 search episodes from 400 more worlds plus the expert traces of the first stage",
}


def _stage(name: str, steps: int, learning_rate: float, batch_size: int, schedule: str, data: str,
           note: str = "") -> dict:
    return {"name": name, "steps": steps, "learning_rate": learning_rate, "batch_size": batch_size,
            "schedule": schedule, "data": data, "note": note}


def _count(shape) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(settings.DEMO_MODEL_DIR), help="folder for the trained model")
    parser.add_argument("--world", default=None, help="folder for the generated world (default: under WORKBENCH_HOME)")
    parser.add_argument("--from-model", default=None, help="skip SFT and use this model folder")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the first SFT stage")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--copy-steps", type=int, default=2300, help="steps of the search-only copy drill (0 skips)")
    parser.add_argument("--copy-learning-rate", type=float, default=5e-4)
    parser.add_argument("--copy-batch-size", type=int, default=16)
    parser.add_argument("--drill-steps", type=int, default=300, help="steps of the search drill SFT stage (0 skips)")
    parser.add_argument("--drill-learning-rate", type=float, default=5e-4)
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N held-out items")
    parser.add_argument("--skip-eval", action="store_true", help="keep the held-out results already in figures.json")
    parser.add_argument("--start-steps", type=int, default=100,
                        help="LoRA SFT steps of the click-to-train start adapter (0 keeps the shipped one)")
    parser.add_argument("--start-learning-rate", type=float, default=5e-4)
    parser.add_argument("--start-out", default=str(settings.DEMO_START_ADAPTER), help="folder for the start adapter")
    parser.add_argument("--grpo-steps", type=int, default=CLICK_TO_TRAIN_STEPS, help="GRPO steps (0 skips GRPO)")
    parser.add_argument("--grpo-task", choices=sorted(GRPO_CONFIGS), default="coding",
                        help="GRPO on the coding rl split (code tool) or the search rl split (search tool)")
    parser.add_argument("--grpo-bundle", default=str(settings.DEMO_GRPO_RUN), help="where the GRPO run is exported")
    args = parser.parse_args(argv)
    started = time.time()
    world = build_world(args.world or settings.home() / "demo-world")
    store = Store()
    out = Path(args.out)
    command = "python -m trainers.demo_model " + " ".join(argv if argv is not None else sys.argv[1:])
    # figures of what `out` held before: results this run does not redo stay, commands accumulate
    previous = json.loads((out / "figures.json").read_text()) if (out / "figures.json").is_file() else {}
    stages: list[dict] = []
    expert_run = None
    if args.from_model is None:
        trained, expert_run = train(world, store, steps=args.steps, learning_rate=args.learning_rate,
                                    batch_size=args.batch_size)
        stages.append(_stage("SFT on the expert traces", args.steps, args.learning_rate, args.batch_size, "linear",
                             STAGE_DATA["sft"]))
    else:
        trained = Path(args.from_model)
        made_by = trained / "figures.json"
        stages += json.loads(made_by.read_text()).get("stages", []) if made_by.is_file() else []
    if args.copy_steps:
        trained = copy_drill(trained, world, store, steps=args.copy_steps, learning_rate=args.copy_learning_rate,
                             batch_size=args.copy_batch_size)
        stages.append(_stage("copy drill", args.copy_steps, args.copy_learning_rate, args.copy_batch_size,
                             "constant", STAGE_DATA["copy"]))
    if args.drill_steps:
        trained = drill_search(trained, world, store, expert_run, steps=args.drill_steps,
                               learning_rate=args.drill_learning_rate, batch_size=args.batch_size)
        stages.append(_stage("search drill", args.drill_steps, args.drill_learning_rate, args.batch_size, "linear",
                             STAGE_DATA["drill"]))
    figures: dict = {"stages": stages}
    if args.from_model is None or args.copy_steps or args.drill_steps:
        figures["sft_minutes"] = round((time.time() - started) / 60, 1)
    if trained.resolve() != out.resolve():
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(trained, out, ignore=shutil.ignore_patterns(*KEEP_OUT, "figures.json", "README.md"))
    if not args.skip_eval:
        figures["results"] = {
            "demo model, with tools": evaluate(str(out), world, store, True, args.eval_limit),
            "demo model, without tools": evaluate(str(out), world, store, False, args.eval_limit),
            "untrained tiny model, with tools": evaluate("tiny", world, store, True, args.eval_limit),
        }
    if args.start_steps:
        figures["start_adapter"] = start_adapter(out, world, store, Path(args.start_out), steps=args.start_steps,
                                                 learning_rate=args.start_learning_rate, batch_size=8)
    if args.grpo_steps:
        if "grpo" in previous and not previous["grpo"]["config"].get("init_adapter"):
            figures["earlier_grpo"] = previous.pop("grpo")  # the full fine-tune click-to-train it replaces
        adapter = Path(args.start_out)
        figures["grpo"] = grpo(str(out), world, store, args.grpo_steps, Path(args.grpo_bundle), args.grpo_task,
                               adapter=adapter)
    figures = {**previous, **figures, "commands": previous.get("commands", []) + [command]}
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    write_model_card(out, figures)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
