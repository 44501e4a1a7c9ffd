"""The distributed path on this machine: ranks, gathers, failures, and real 2-process gloo DDP GRPO runs.

The runs go through the project's own launcher (trainers.launch, cpu_processes=2:
`accelerate launch` with ACCELERATE_USE_CPU=true), exactly as a job runs them.
"""

import multiprocessing
import os
import socket
import subprocess
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainers.config import GrpoJobConfig
from trainers.job_run import JobContext, fail_run
from trainers.logging_callback import StoreLoggingCallback
from workbench.store import Store
from workbench.trace import ToolCall

REPO = Path(__file__).resolve().parent.parent
TINY = {"model": "tiny", "max_pixels": 56 * 56, "min_pixels": 28 * 28, "max_completion_length": 16}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_main(rank: int, port: int, results) -> None:
    """One of two gloo ranks: different episodes per rank, then the shared aggregation."""
    import torch.distributed as dist

    from trainers.logging_callback import all_ranks_tool_rates
    from trainers.ranks import gather

    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        calls = {0: [[], []],  # rank 0: two episodes without a tool call
                 1: [[ToolCall("code", "x", ok=True)], [ToolCall("code", "y", ok=False), ToolCall("search", "z")]]}
        environments = [SimpleNamespace(tool_calls=c) for c in calls[rank]]
        results.put((rank, all_ranks_tool_rates(environments), gather([f"label-{rank}"])))
    finally:
        dist.destroy_process_group()


def test_tool_rates_and_gathers_span_every_rank():
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    ranks = [context.Process(target=_rank_main, args=(rank, port, results)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    got = {rank: (rates, labels) for rank, rates, labels in (results.get(timeout=120) for _ in ranks)}
    for process in ranks:
        process.join(timeout=30)
        assert process.exitcode == 0
    expected = {"tools/call_rate": 0.5, "tools/calls_per_episode": 0.75, "tools/failure_rate": 1 / 3}
    for rank in (0, 1):
        rates, labels = got[rank]
        assert rates == pytest.approx(expected), rank  # rank 0 alone would say 0 calls
        assert labels == ["label-0", "label-1"]


def test_only_rank_zero_writes_and_a_failed_rank_is_the_runs_failure(monkeypatch, tmp_path):
    store = Store()
    run_id = store.create_run("ddp", "train")
    monkeypatch.setenv("RANK", "1")
    callback = StoreLoggingCallback(store, run_id, max_steps=2)
    callback.on_train_begin(None, SimpleNamespace(is_world_process_zero=True), None)
    assert callback._writer is None, "rank 1 writes nothing, whatever the trainer thinks"
    context = JobContext(store, run_id, None, tmp_path, 0.0)
    try:
        raise RuntimeError("CUDA out of memory on rank 1")
    except RuntimeError as exc:
        fail_run(context, exc)
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["summary"]["error"] == "rank 1: RuntimeError: CUDA out of memory on " \
                                                                     "rank 1"
    monkeypatch.setenv("RANK", "0")
    try:
        raise RuntimeError("Connection closed by peer")  # rank 0's echo of the lost rank
    except RuntimeError as exc:
        fail_run(context, exc)
    assert store.get_run(run_id)["summary"]["failed_rank"] == 1
    assert "out of memory" in store.get_run(run_id)["summary"]["error"]


# -- real runs -----------------------------------------------------------------------------------------
def _launch(config: GrpoJobConfig, run_id: str, home: Path, *, resume: bool = False) -> None:
    from trainers.launch import build_command

    command = build_command(config, run_id=run_id, resume=resume)
    assert "accelerate.commands.launch" in command and command[:2] == ["env", "ACCELERATE_USE_CPU=true"]
    env = {**os.environ, "WORKBENCH_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def _rows_per_step(store: Store, run_id: str) -> Counter:
    return Counter((row["name"], row["step"]) for row in store.metrics_since(run_id))


def _traces(store: Store, run_id: str) -> list:
    return [store.get_trace(row["id"]) for row in store.list_traces(run_id=run_id, limit=1000)]


@pytest.fixture
def demo(workbench_home, tmp_path):
    from trainers.demo_data import prepare_demo_data
    from trainers.modeling import resolve_model_path

    resolve_model_path("tiny")  # built once, before two processes would race to build it
    return prepare_demo_data(tmp_path / "demo", Store(), count=8, seed=5)


@pytest.mark.slow
def test_two_process_ddp_steps_run_logs_once_labels_every_group_and_resumes(demo, workbench_home):
    from trainers.grpo import run_grpo

    store = Store()
    values = dict(data_files=[str(demo.steps_file)], mode="steps", num_generations=2, max_steps=2, save_steps=1,
                  trace_groups=8, **TINY)
    single = run_grpo(GrpoJobConfig(**values, per_device_train_batch_size=4), store=store)
    ddp = GrpoJobConfig(**values, per_device_train_batch_size=2, cpu_processes=2)
    _launch(ddp, "ddp-steps", workbench_home)

    rows = _rows_per_step(store, "ddp-steps")
    assert rows == _rows_per_step(store, single), "rank 0 alone logs, the same rows as one process"
    traces = _traces(store, "ddp-steps")
    assert len(traces) == 2 * 4, "every group of both ranks (2 per step) is saved"
    assert all(t.gold and t.metadata["step_type"] and not t.item_id.startswith("group") for t in traces)

    longer = GrpoJobConfig(**{**values, "max_steps": 3}, per_device_train_batch_size=2, cpu_processes=2)
    _launch(longer, "ddp-steps", workbench_home, resume=True)
    run = store.get_run("ddp-steps")
    assert run["status"] == "succeeded" and run["summary"]["resumed_from"].endswith("checkpoint-2")
    assert {step for name, step in _rows_per_step(store, "ddp-steps") if name == "loss"} == {1, 2, 3}
    assert max(_rows_per_step(store, "ddp-steps").values()) <= 2  # 'epoch' is logged twice at the end, as TRL does
    assert [c["step"] for c in store.list_checkpoints("ddp-steps")] == [1, 2, 3]


@pytest.mark.slow
def test_two_process_ddp_episodes_with_one_sample_per_rank_gathers_tool_records_and_rates(demo, workbench_home):
    from trainers.modeling import load_processor, resolve_model_path

    store = Store()
    processor = load_processor(resolve_model_path("tiny"), GrpoJobConfig(data_files=[str(demo.items_file)]),
                               padding_side="left")
    call = processor.tokenizer.encode("<code>print(1)</code>", add_special_tokens=False)
    script = [[call[:k], 100.0 * k] for k in range(1, len(call) + 1)]  # every turn calls the code tool
    config = GrpoJobConfig(data_files=[str(demo.items_file)], mode="episodes", tools=["code"], num_generations=2,
                           per_device_train_batch_size=1, cpu_processes=2, max_steps=2, max_turns=2,
                           trace_groups=8, trl_args={"generation_kwargs": {"sequence_bias": script}},
                           **{**TINY, "max_completion_length": 128})
    _launch(config, "ddp-episodes", workbench_home)

    rows = _rows_per_step(store, "ddp-episodes")
    assert max(rows.values()) <= 2 and rows[("tools/call_rate", 1)] == rows[("tools/call_rate", 2)] == 1
    traces = _traces(store, "ddp-episodes")
    # one group per step, its two samples generated on different ranks: both saved, both with their tool calls
    assert len(traces) == 2 * 2 and all(not t.item_id.startswith("group") and t.gold for t in traces)
    calls = [[turn.tool_call for turn in t.turns if turn.tool_call is not None] for t in traces]
    # stdout and latency exist only in the record the episode's environment kept, on the rank that ran it
    assert all(c and c[0].name == "code" and c[0].stdout == "1\n" and c[0].latency_s > 0 for c in calls), \
        "rank 1's episodes keep their tool records"
    metrics = {(row["name"], row["step"]): row["value"] for row in store.metrics_since("ddp-episodes")}
    assert metrics[("tools/call_rate", 1)] == 1.0
    assert store.get_run("ddp-episodes")["summary"]["steps"] == 2
