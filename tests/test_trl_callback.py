"""WorkbenchCallback on a plain TRL GRPO script: into a local workbench home, and streamed to a served workbench
that is killed and restarted mid-run; and the TRL completion table that run writes, imported."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from transformers import TrainerCallback

from tests.plain_trl_script import ZOOM_IMAGE_COLOUR, plain_grpo_trainer
from workbench.images import image_path
from workbench.integrations.trl_callback import WorkbenchCallback
from workbench.store import Store

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-ingest-token-0123456789"


def _metric_steps(store: Store, run_id: str) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    for row in store.metrics_since(run_id):
        steps.setdefault(row["name"], []).append(row["step"])
    return steps


def _check_group_traces(store: Store, run_id: str, steps: int) -> None:
    traces = [store.get_trace(row["id"]) for row in store.list_traces(run_id=run_id, limit=1000)]
    by_step = Counter(t.step for t in traces)
    assert by_step == dict.fromkeys(range(1, steps + 1), 2)  # one whole group (G = 2) per step, once each
    for trace in traces:
        assert trace.images and trace.question.startswith("What colour")
        assert [turn.action for turn in trace.turns][0] == "zoom" and len(trace.turns) == 2  # call, then answer
        call = trace.turns[0].tool_call
        assert call.name == "zoom" and call.output_text == "zoomed 2x" and len(call.output_images) == 1
        from PIL import Image

        with Image.open(image_path(call.output_images[0])) as stored:
            assert stored.convert("RGB").getpixel((0, 0)) == ZOOM_IMAGE_COLOUR
        assert trace.rewards["length_reward"] == 3.0 and trace.rewards["constant_reward"] == 0.5
        assert trace.rewards["total"] == 3.5 and trace.advantage is not None
        assert [m["role"] for m in trace.messages] == ["user", "assistant", "tool", "assistant"]
    assert len({t.group_id for t in traces if t.step == 1}) == 1


@pytest.mark.slow
@pytest.mark.parametrize("tools", ["tools", "environment"])
def test_a_plain_trl_script_with_a_tool_lands_in_the_local_store(tmp_path, workbench_home, tools):
    callback = WorkbenchCallback(run_name="my own script")
    trainer = plain_grpo_trainer(tmp_path / "out", steps=2, callbacks=[callback], tools=tools)
    trainer.train()

    store = Store()
    (run,) = [r for r in store.list_runs() if r["name"] == "my own script"]
    assert run["status"] == "succeeded" and run["kind"] == "train" and run["config"]["peft"] is False
    assert run["config"]["tools"] == ["zoom"]  # an environment's methods are its tools too
    steps = _metric_steps(store, run["id"])
    for name in ("loss", "reward", "rewards/length_reward/mean", "rewards/constant_reward/mean",
                 "tools/call_frequency", "completions/mean_length"):
        assert steps.get(name) == [1, 2], name  # TRL's names, every step exactly once
    _check_group_traces(store, run["id"], 2)
    assert callback.errors == []


@pytest.mark.slow
def test_a_single_turn_lora_run_and_the_completion_table_trl_writes_for_it(tmp_path, workbench_home):
    # TRL 1.16 cannot write this table for a tool run whose tool returns images (pyarrow: "cannot mix list and
    # non-list"), so the table comes from a single-turn run
    callback = WorkbenchCallback(run_name="single turn")
    trainer = plain_grpo_trainer(tmp_path / "out", steps=1, callbacks=[callback], tools=None, lora=True,
                                 log_completions=True)
    trainer.train()
    store = Store()
    (run,) = [r for r in store.list_runs() if r["name"] == "single turn"]
    assert run["config"]["peft"] is True and run["status"] == "succeeded"
    (row,) = store.list_traces(run_id=run["id"], limit=10)[:1]
    trace = store.get_trace(row["id"])
    assert trace.images and len(trace.turns) == 1 and trace.turns[0].action == "answer"
    assert trace.stop_reason == "answered" and set(trace.rewards) == {"length_reward", "constant_reward", "total"}

    from workbench.rollout_import import import_rollouts

    report = import_rollouts(store, tmp_path / "out" / "completions", "trl", name="trl table")
    assert report.traces == 2 and report.steps == {1} and report.groups == 1
    assert "image TRL's table left out x2" in report.summary()  # TRL strips images from its tables
    imported = [store.get_trace(r["id"]) for r in store.list_traces(run_id=report.run_id, limit=10)]
    logged = [store.get_trace(r["id"]) for r in store.list_traces(run_id=run["id"], limit=10)]
    assert all(t.rewards["length_reward"] == 1.0 and t.rewards["constant_reward"] == 0.5 for t in imported)
    assert {t.question for t in imported} == {trace.question}  # one group: the prompt the callback logged
    assert sorted(t.turns[0].raw for t in imported) == sorted(t.turns[0].raw for t in logged)


@pytest.mark.slow
def test_a_generation_trained_on_for_several_steps_is_logged_once(tmp_path, workbench_home):
    # steps_per_generation=2: TRL generates 2 groups once and trains 2 steps on them; _logs stays the same
    callback = WorkbenchCallback(run_name="two steps per generation", groups_per_step=2)
    trainer = plain_grpo_trainer(tmp_path / "out", steps=2, callbacks=[callback], steps_per_generation=2)
    trainer.train()
    store = Store()
    traces = [store.get_trace(r["id"]) for r in store.list_traces(run_id=callback.run_id, limit=100)]
    assert sorted((t.step, t.sample_index) for t in traces) == [(1, 0), (1, 0), (1, 1), (1, 1)]
    assert len({t.group_id for t in traces}) == 2 and _metric_steps(store, callback.run_id)["loss"] == [1, 2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    """The workbench app (`python app.py`) on 127.0.0.1 with ingestion on, in its own home."""

    def __init__(self, home: Path, port: int, log: Path):
        self.home, self.port, self.log = home, port, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "WORKBENCH_HOME": str(self.home), "WORKBENCH_INGEST_TOKEN": TOKEN,
               "GRADIO_SERVER_PORT": str(self.port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "0"}
        env.pop("WORKBENCH_PUBLIC_DEMO", None)
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=self.log.open("a"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_up(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                assert self.process.poll() is None, self.log.read_text()[-2000:]
                time.sleep(0.25)
        raise AssertionError("the workbench did not start: " + self.log.read_text()[-2000:])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class _KillAndRestart(TrainerCallback):
    """Kills the server after step 2's log and starts it again after step 3's (training goes on meanwhile)."""

    def __init__(self, server: _Server, sender: WorkbenchCallback):
        self.server, self.sender = server, sender
        self.killed_at = self.restarted_at = None
        self.waiting_at_restart = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == 2 and self.killed_at is None:
            self.server.kill()
            self.killed_at = state.global_step
        elif state.global_step == 3 and self.restarted_at is None:
            time.sleep(0.5)  # step 3's batch reaches the spool (written off the training thread)
            self.waiting_at_restart = self.sender._sink.pending()
            self.server.start()
            self.restarted_at = state.global_step


@pytest.mark.slow
def test_streaming_to_a_served_workbench_survives_its_restart_exactly_once(tmp_path, monkeypatch):
    server = _Server(tmp_path / "server-home", _free_port(), tmp_path / "server.log")
    server.start()
    try:
        server.wait_up()
        steps = 5
        callback = WorkbenchCallback(url=f"http://127.0.0.1:{server.port}", token=TOKEN, run_name="remote",
                                     spool_dir=tmp_path / "spool", deliver_timeout_s=120)
        chaos = _KillAndRestart(server, callback)
        trainer = plain_grpo_trainer(tmp_path / "out", steps=steps, callbacks=[callback, chaos])
        trainer.train()
        assert chaos.killed_at == 2 and chaos.restarted_at == 3
        assert chaos.waiting_at_restart >= 1  # batches waited on disk while the workbench was down
        assert callback._sink.pending() == 0 and callback._sink.rejected == 0 and callback.errors == []
    finally:
        server.kill()
    monkeypatch.setenv("WORKBENCH_HOME", str(server.home))  # read the server's store and images
    store = Store(server.home / "workbench.db")
    run = store.get_run(callback.run_id)
    assert run["name"] == "remote" and run["status"] == "succeeded" and run["config"]["ingested"] is True
    steps_by_metric = _metric_steps(store, callback.run_id)
    for name in ("loss", "reward", "rewards/length_reward/mean", "tools/call_frequency"):
        assert steps_by_metric.get(name) == list(range(1, steps + 1)), name  # every step, exactly once
    _check_group_traces(store, callback.run_id, steps)
    received = store.db.execute("select count(*) from ingested_batches where run_id = ?", [callback.run_id])
    assert received.fetchone()[0] == callback.batches_sent
