"""Offline training data for the embedded tiny model: click-to-train, tests and the benchmark.

Builds, from the synthetic MAT-Coding-mini world (workbench.synth):
- a MAT-Coding-format item file (episodes mode: the tools run in rollouts);
- expert traces: the scripted expert's turns replayed through the real agent
  runner with the real sandboxed code tool (so tool outputs are genuine), in
  the chat layout the multi-turn training uses; they feed cold-start SFT;
- a Visual-ARFT-format coding training file cut from those traces (steps
  mode: pre_problem / pre_code / pre_answer rows with the chain as context).
`click_to_train_config` is the LoRA-GRPO run the Train tab's "Fill in a
demo run" sets up from the demo model and its start adapter (the one
definition: `trainers.demo_model` makes the shipped run with it too); `demo_sft_config` / `demo_grpo_config`
train the untrained tiny model (cold-start SFT, then multi-turn GRPO with
the code tool), the ones bench/bench_train.py measures.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from trainers.config import GrpoJobConfig, SftJobConfig
from trainers.data import step_rows_from_trace
from workbench import protocol
from workbench.store import Store


@dataclass
class DemoData:
    folder: Path
    items_file: Path  # MAT-Coding-mini items
    steps_file: Path | None = None  # Visual-ARFT coding rows, once expert traces exist
    expert_run: str | None = None


def write_demo_items(folder: str | Path, count: int = 16, seed: int = 0) -> DemoData:
    """MAT-Coding-mini items (images + JSON) in `folder`."""
    from workbench.benchmarks import mat_coding_mini

    folder = Path(folder)
    items_file = mat_coding_mini.generate(folder, count=count, seed=seed)
    return DemoData(folder, items_file)


def record_expert_traces(data: DemoData, store: Store, *, run_id: str | None = None, protocol_name: str = "tags",
                         workers: int = 2) -> str:
    """Replay the expert on every item through the agent runner with the real code tool; returns the run id."""
    from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig
    from workbench.agent.tools import build_tools
    from workbench.backends.replay import ReplayBackend
    from workbench.benchmarks import mini_expert
    from workbench.benchmarks.loaders import load_mat_coding

    if protocol_name != "tags":
        raise ValueError("the scripted expert writes tag-protocol turns; use protocol_name='tags'")
    turns, items = {}, []
    for item in load_mat_coding(data.items_file):
        box = protocol.find_box(item.question)
        question = f"{item.question} (item {item.id})"  # unique questions: the replay looks turns up by question
        turns[question] = mini_expert.coding_turns(item.types, item.answers[0],
                                              [round(v) for v in box] if box else None)
        items.append(AgentItem(question=question, images=[item.image], item_id=item.id, gold=item.answers))
    run_id = store.create_run("expert traces (MAT-Coding-mini)", "imported", run_id=run_id, status="running",
                              config={"source": "scripted expert", "items": str(data.items_file)})
    runner = AgentRunner(ReplayBackend(turns), build_tools(("code",)),
                         RunnerConfig(tools=("code",), layout="chat", tool_workers=workers),
                         store=store, run_id=run_id)
    runner.run(items)
    store.update_run(run_id, status="succeeded")
    data.expert_run = run_id
    return run_id


def write_steps_file(data: DemoData, store: Store) -> Path:
    """Cut the answered expert traces into Visual-ARFT coding rows (needs record_expert_traces first)."""
    if data.expert_run is None:
        raise ValueError("record the expert traces first (record_expert_traces)")
    from workbench.images import image_path

    rows = []
    for summary in store.list_traces(run_id=data.expert_run, limit=10 ** 6):
        trace = store.get_trace(summary["id"])
        if trace is None or trace.stop_reason != "answered" or not trace.images:
            continue
        rows += step_rows_from_trace(trace, str(image_path(trace.images[0])))
    path = data.folder / "coding_train.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    data.steps_file = path
    return path


def prepare_demo_data(folder: str | Path, store: Store, *, count: int = 16, seed: int = 0) -> DemoData:
    """Items, expert traces and the steps file, in one call."""
    data = write_demo_items(folder, count=count, seed=seed)
    record_expert_traces(data, store)
    write_steps_file(data, store)
    return data


# Four image tokens per image: enough for the tiny model, and it keeps a step around a few seconds on 2 cores.
TINY_PIXELS = {"max_pixels": 56 * 56, "min_pixels": 28 * 28}
# The tiny model needs none of the memory savings real checkpoints need (recomputing costs it ~10% of a step).
TINY_MEMORY = {"gradient_checkpointing": False}


def demo_sft_config(data: DemoData, steps: int = 60) -> SftJobConfig:
    """Cold start for the tiny model: full fine-tuning on the expert traces until it speaks the protocol."""
    if data.expert_run is None:
        raise ValueError("record the expert traces first (record_expert_traces)")
    return SftJobConfig(model="tiny", trace_runs=[data.expert_run], finetune="full", max_steps=steps,
                        per_device_train_batch_size=4, learning_rate=1e-3, save_steps=0,
                        run_name="cold start (tiny, expert traces)", **TINY_PIXELS, **TINY_MEMORY)


CLICK_TO_TRAIN_STEPS = 12


def click_to_train_config(model: str, items_file: str, eval_file: str, steps: int = CLICK_TO_TRAIN_STEPS,
                          init_adapter: str | None = None) -> GrpoJobConfig:
    """LoRA-GRPO with the live code tool from `init_adapter` (the demo start adapter: a policy that mostly
    answers without its tool) on colour questions the image hides until code repairs it (items SFT never saw).

    The choice "call the tool or answer now" is one early token with a large reward gap (answer F1 plus the
    problem label), so 8 samples per prompt (most groups then hold both branches) and a high LoRA learning rate
    move it within a few steps. No KL term: its reference would be the demo model without the start adapter.
    Held-out evaluation every 4 steps on the 40 held-out items, 2 samples each with one fixed seed (an
    unchanged policy scores the same), so the step-0 point appears within about a minute. Temperature 0.7:
    the tool is still tried at the start, and answers after it are mostly right (at 1.0 about half were)."""
    return GrpoJobConfig(model=model, init_adapter=init_adapter, finetune="lora", data_files=[str(items_file)],
                         mode="episodes", tools=["code"], num_generations=8, per_device_train_batch_size=32,
                         max_completion_length=384, max_turns=4, max_steps=steps, save_steps=8, temperature=0.7,
                         learning_rate=1e-3, beta=0.0, seed=0, eval_data_files=[str(eval_file)], eval_steps=4,
                         max_eval_items=0, num_generations_eval=2, max_pixels=0, **TINY_MEMORY)


def demo_grpo_config(data: DemoData, model: str, steps: int = 50) -> GrpoJobConfig:
    """Multi-turn GRPO with the live code tool on the MAT-Coding-mini items, LoRA on the cold-started model."""
    return GrpoJobConfig(model=model, data_files=[str(data.items_file)], mode="episodes", tools=["code"],
                         num_generations=4, per_device_train_batch_size=4, max_completion_length=256, max_turns=4,
                         max_steps=steps, save_steps=25, temperature=0.8, learning_rate=1e-5, beta=0.04, seed=0,
                         run_name="multi-turn GRPO (tiny, code tool)", **TINY_PIXELS, **TINY_MEMORY)
