"""Real training runs on the embedded tiny model: GRPO (paper recipe), resume, SFT, multi-turn tool GRPO."""

import dataclasses
from pathlib import Path

import pytest
import torch

from trainers.config import GrpoJobConfig, SftJobConfig
from trainers.demo_data import demo_grpo_config, prepare_demo_data
from trainers.grpo import build_grpo_trainer, run_grpo
from trainers.sft import run_sft
from workbench.store import Store

PER_STEP_METRICS = {"loss", "learning_rate", "kl", "reward", "reward_std", "reward_group_std",
                    "rewards/format/mean", "completions/mean_length", "step_time", "step_wall_time"}
TINY = {"max_pixels": 56 * 56, "min_pixels": 28 * 28}  # four image tokens per image keep the steps fast


@pytest.fixture
def store():
    return Store()


@pytest.fixture
def demo(tmp_path, store):
    return prepare_demo_data(tmp_path / "demo", store, count=6, seed=5)


def _steps_by_metric(store: Store, run_id: str) -> dict[str, set[int]]:
    steps: dict[str, set[int]] = {}
    for row in store.metrics_since(run_id):
        steps.setdefault(row["name"], set()).add(row["step"])
    return steps


def test_paper_recipe_logs_metrics_traces_checkpoints_and_resumes_at_its_step(demo, store):
    values = dict(data_files=[str(demo.steps_file)], mode="steps", num_generations=2, per_device_train_batch_size=4,
                  max_completion_length=24, max_steps=3, save_steps=2, learning_rate=1e-4, **TINY)
    job_id = store.create_job("grpo", {}, ["python"], log_path="")
    run_id = run_grpo(GrpoJobConfig(**values), job_id=job_id, store=store)

    run = store.get_run(run_id)
    assert run["status"] == "succeeded" and run["kind"] == "train" and run["summary"]["steps"] == 3
    assert run["reward_spec"]["components"]["format"]["weight"] == 1.0
    steps = _steps_by_metric(store, run_id)
    for name in PER_STEP_METRICS:
        assert steps.get(name) == {1, 2, 3}, name
    traces = [store.get_trace(row["id"]) for row in store.list_traces(run_id=run_id, limit=100)]
    assert len(traces) == 3 * 2  # one whole group (G = 2) per step
    for step in (1, 2, 3):
        group = [t for t in traces if t.step == step]
        assert len({t.group_id for t in group}) == 1 and sorted(t.sample_index for t in group) == [0, 1]
        assert all(t.advantage is not None and "format" in t.rewards and "total" in t.rewards for t in group)
    assert all(t.turns and t.images and t.gold and t.metadata["step_type"] for t in traces)
    checkpoints = store.list_checkpoints(run_id)
    assert [c["step"] for c in checkpoints] == [2, 3]
    assert all((Path(c["path"]) / "adapter_model.safetensors").is_file() for c in checkpoints)
    assert store.get_job(job_id)["progress"] == 1.0 and store.get_job(job_id)["run_id"] == run_id

    resumed = run_grpo(GrpoJobConfig(**{**values, "max_steps": 5}), run_id=run_id, resume=True, store=store)
    assert resumed == run_id
    summary = store.get_run(run_id)["summary"]
    assert summary["resumed_from"].endswith("checkpoint-3") and summary["steps"] == 5
    assert _steps_by_metric(store, run_id)["loss"] == {1, 2, 3, 4, 5}
    # save_total_limit (3) deleted checkpoint-2 when checkpoint-5 was saved: the list follows the disk
    assert [c["step"] for c in store.list_checkpoints(run_id)] == [3, 4, 5]
    assert not Path(checkpoints[0]["path"]).exists()


def test_sft_on_traces_from_the_store_and_from_an_export(demo, store, tmp_path):
    from workbench.trace_io import export_run

    exported = tmp_path / "expert.jsonl"
    assert export_run(store, demo.expert_run, exported) == 6
    config = SftJobConfig(trace_runs=[demo.expert_run], trace_files=[str(exported)], max_steps=4,
                          per_device_train_batch_size=4, learning_rate=1e-3, save_steps=0, **TINY)
    run_id = run_sft(config, store=store)
    run = store.get_run(run_id)
    assert run["status"] == "succeeded" and run["summary"]["traces"] == 12
    losses = [r["value"] for r in store.metrics_since(run_id, names=["loss"])]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    (checkpoint,) = store.list_checkpoints(run_id)
    assert checkpoint["step"] == 4 and (Path(checkpoint["path"]) / "adapter_config.json").is_file()


@pytest.mark.slow
def test_multi_turn_tool_grpo_from_the_demo_model_runs_the_code_tool(demo, store):
    # the demo model is the SFT cold start (trainers.demo_model); its own image size (16 tokens per image)
    config = dataclasses.replace(demo_grpo_config(demo, "demo", steps=2), per_device_train_batch_size=8, max_pixels=0,
                                 min_pixels=0, max_completion_length=384)
    run_id = run_grpo(config, store=store)
    steps = _steps_by_metric(store, run_id)
    for name in ("tools/call_rate", "tools/calls_per_episode", "tools/failure_rate", "tools/call_frequency"):
        assert steps.get(name) == {1, 2}, name
    traces = [store.get_trace(row["id"]) for row in store.list_traces(run_id=run_id, limit=100)]
    calls = [turn.tool_call for trace in traces for turn in trace.turns if turn.tool_call is not None]
    assert calls, "the demo model should call the code tool"
    assert all(call.name == "code" and call.latency_s > 0 for call in calls)
    assert any(call.ok and call.output_images for call in calls) or all(call.error for call in calls)
    assert any(trace.layout == "chat" and len(trace.turns) > 1 for trace in traces)


def test_held_out_reward_is_logged_before_training_and_every_eval_steps(demo, store):
    config = dataclasses.replace(demo_grpo_config(demo, "tiny", steps=2), eval_data_files=[str(demo.items_file)],
                                 eval_steps=2, max_eval_items=1, max_completion_length=48, log_traces_every=0)
    run_id = run_grpo(config, store=store)
    steps = _steps_by_metric(store, run_id)
    assert steps.get("eval_reward") == {0, 2}
    assert steps.get("reward") == {1, 2}  # training rewards stay separate from the held-out ones


def test_held_out_evaluations_sample_with_the_same_seed(demo, tmp_path):
    """An unchanged policy scores the same at every evaluation; training's random state is not touched."""
    config = dataclasses.replace(demo_grpo_config(demo, "tiny", steps=1), eval_data_files=[str(demo.items_file)],
                                 eval_steps=1, max_eval_items=2, max_completion_length=32, temperature=1.5)
    setup = build_grpo_trainer(config, tmp_path / "out", with_logging=False)
    try:
        trainer = setup.trainer
        torch.manual_seed(1)
        first = trainer.evaluate()
        after_first = torch.rand(1)
        torch.manual_seed(1)
        torch.rand(1)  # training's random stream moved on: evaluation must not care
        second = trainer.evaluate()
        torch.manual_seed(1)
        assert torch.equal(torch.rand(1), after_first), "evaluation consumed training's random numbers"
        assert first["eval_completions/mean_length"] == second["eval_completions/mean_length"]
        assert first["eval_reward"] == second["eval_reward"]
    finally:
        setup.close()
