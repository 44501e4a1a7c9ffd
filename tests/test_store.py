"""Store round-trips: runs, metrics, traces with turns and tool calls, images, jobs, migrations."""

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlite_utils
from PIL import Image

from workbench.store import MIGRATIONS, Store
from workbench.trace import ToolCall, Trace, Turn

ROOT = Path(__file__).resolve().parent.parent


def make_trace(store: Store, run_id: str, item: str = "item-1", reward: float = 1.0) -> Trace:
    sha = store.put_image(Image.new("RGB", (320, 240), "navy"))
    out = store.put_image(Image.new("RGB", (64, 64), "white"))
    return Trace(
        question="What does the sign say?", images=[sha], run_id=run_id, item_id=item, gold=["STOP"],
        turns=[
            Turn(index=0, raw="<think>dark</think><problem>{'dark'}</problem>", think="dark",
                 action="problem", argument="{'dark'}", image=sha, feedback="<tips> fix </tips>",
                 prompt_tokens=40, completion_tokens=9, latency_s=0.1),
            Turn(index=1, raw="<think>fix</think><code>x</code>", action="code", argument="x", image=sha,
                 tool_call=ToolCall(name="code", argument="x", output_images=[out], stdout="ok\n",
                                    stderr="", details={"timed_out": False}, latency_s=0.02),
                 prompt_tokens=60, completion_tokens=12),
            Turn(index=2, raw="<think>read</think><answer>STOP</answer>", action="answer", argument="STOP",
                 image=out),
        ],
        messages=[{"role": "user", "content": [{"type": "image", "image": "sha256:" + sha}]}],
        final_answer="STOP", stop_reason="answered", rewards={"f1": reward, "total": reward},
        model_id="tiny", metadata={"position": 0},
    )


def test_trace_round_trip_is_exact():
    store = Store()
    run = store.create_run("demo", "playground")
    trace = make_trace(store, run)
    store.save_trace(trace)
    loaded = store.get_trace(trace.id)
    assert loaded.to_dict() == trace.to_dict()
    assert loaded.prompt_tokens == 100
    assert loaded.turns[1].tool_call.output_images == trace.turns[1].tool_call.output_images


def test_saving_a_trace_again_replaces_its_turns():
    store = Store()
    run = store.create_run("demo", "eval")
    trace = make_trace(store, run)
    store.save_trace(trace)
    trace.turns = trace.turns[:1]
    store.save_trace(trace)
    assert len(store.get_trace(trace.id).turns) == 1
    assert store.count_traces(run) == 1


def test_list_traces_filters():
    store = Store()
    run = store.create_run("demo", "eval")
    good, bad = make_trace(store, run, "a", 1.0), make_trace(store, run, "b", 0.0)
    bad.stop_reason = "max_turns"
    store.save_traces([good, bad])
    assert [t["item_id"] for t in store.list_traces(run_id=run, min_reward=0.5)] == ["a"]
    assert [t["item_id"] for t in store.list_traces(run_id=run, stop_reason="max_turns")] == ["b"]
    assert store.trace_item_ids(run) == {"a", "b"}


def test_metrics_incremental_poll():
    store = Store()
    run = store.create_run("train", "train")
    store.log_metrics(run, 1, {"reward": 0.1, "loss": 2.0})
    first = store.metrics_since(run)
    store.log_metrics(run, 2, {"reward": 0.3})
    newer = store.metrics_since(run, after_id=first[-1]["id"])
    assert [(r["step"], r["name"], r["value"]) for r in newer] == [(2, "reward", 0.3)]
    assert store.last_metric_values(run) == {"reward": 0.3, "loss": 2.0}
    assert store.metric_names([run]) == ["loss", "reward"]


def test_run_kinds_and_bad_kind():
    store = Store()
    with pytest.raises(ValueError, match="run kind"):
        store.create_run("x", "nonsense")
    run = store.create_run("x", "imported", config={"a": 1})
    store.update_run(run, status="succeeded", summary={"all_f1": 50.0})
    assert store.get_run(run)["summary"] == {"all_f1": 50.0}
    store.delete_run(run)
    assert store.get_run(run) is None


def test_jobs_round_trip_and_status_check():
    store = Store()
    job = store.create_job("grpo", {"lr": 1e-5}, ["python", "-m", "trainers.grpo"], "/tmp/log")
    store.update_job(job, status="running", pid=123)
    row = store.get_job(job)
    assert row["status"] == "running" and row["command"][0] == "python" and row["config"] == {"lr": 1e-5}
    with pytest.raises(ValueError, match="job status"):
        store.update_job(job, status="exploded")


def test_migrations_are_versioned_and_idempotent(workbench_home):
    store = Store()
    assert store.schema_version == len(MIGRATIONS.pending(sqlite_utils.Database(memory=True)))
    Store(store.path)  # opening again must not re-run migrations
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _database_of_schema_2(path) -> sqlite_utils.Database:
    """A database as releases before sqlite-utils migrations left it: two migrations, counted in user_version."""
    old = sqlite_utils.Database(path)
    for migration in MIGRATIONS.pending(sqlite_utils.Database(memory=True))[:2]:  # the schema of those releases
        migration.fn(old)
    old["runs"].insert({"id": "r1", "name": "kept", "kind": "train", "status": "succeeded", "config": "{}",
                        "summary": "{}", "created_at": 1.0, "updated_at": 1.0})
    old.execute("PRAGMA user_version=2")
    return old


def test_a_database_from_before_sqlite_utils_migrations_keeps_its_data(tmp_path):
    """Databases versioned by PRAGMA user_version (every earlier release) open without re-running migrations."""
    _database_of_schema_2(tmp_path / "old.db").conn.commit()
    store = Store(tmp_path / "old.db")
    assert store.get_run("r1")["name"] == "kept" and store.schema_version == len(MIGRATIONS.pending(
        sqlite_utils.Database(memory=True)))  # the two it had, counted once, plus every later one


def test_metric_rows_of_an_older_database_move_into_batches(tmp_path):
    old = _database_of_schema_2(tmp_path / "old.db")
    rows = [("r1", 1, "reward", 0.1), ("r1", 1, "loss", 2.0), ("r1", 2, "reward", 0.3), ("r2", 7, "reward", 9.0),
            ("r1", 2, "loss", 1.5), ("r1", 2, "reward", 0.35)]  # a resumed job logged step 2 again
    old["metrics"].insert_all({"run_id": run, "step": step, "name": name, "value": value, "created_at": 1.0}
                              for run, step, name, value in rows)
    old.conn.commit()
    store = Store(tmp_path / "old.db")
    moved = [(row["step"], row["name"], row["value"]) for row in store.metrics_since("r1")]
    assert sorted(moved) == sorted((step, name, value) for run, step, name, value in rows if run == "r1")
    assert [row["value"] for row in store.metrics_since("r1", names=["reward"])] == [0.1, 0.3, 0.35]  # logged order
    assert store.last_metric_values("r1") == {"reward": 0.35, "loss": 1.5}
    assert store.metric_names(["r1", "r2"]) == ["loss", "reward"]
    assert "metrics" not in store.db.table_names()


def test_two_processes_opening_a_new_database_at_once_migrate_it_once(tmp_path):
    path = tmp_path / "race.db"
    code = f"from workbench.store import Store; Store({str(path)!r}).create_run('x', 'train')"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT) for _ in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    assert len(Store(path).list_runs()) == 4


def test_concurrent_writers_do_not_lose_rows():
    store = Store()
    run = store.create_run("train", "train")

    def write(offset: int) -> None:
        for step in range(50):
            store.log_metrics(run, offset + step, {"reward": float(step)})

    threads = [threading.Thread(target=write, args=(i * 1000,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.metrics_since(run)) == 200


def test_images_are_content_addressed_with_thumbnails():
    store = Store()
    first = store.put_image(Image.new("RGB", (1000, 500), "red"))
    again = store.put_image(Image.new("RGB", (1000, 500), "red"))
    assert first == again
    row = store.get_image(first)
    thumb = Image.open(row["thumbnail"])
    assert (row["width"], row["height"]) == (1000, 500) and max(thumb.size) <= 160


def test_checkpoints_are_recorded_in_step_order(tmp_path):
    store = Store()
    run = store.create_run("train", "train")
    for step in (20, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        store.record_checkpoint(run, step, tmp_path / f"checkpoint-{step}")
    assert [c["step"] for c in store.list_checkpoints(run)] == [10, 20]


def test_checkpoints_deleted_from_disk_are_not_listed(tmp_path):
    """save_total_limit deletes old checkpoint folders after they were recorded: the list follows the disk."""
    store = Store()
    run = store.create_run("train", "train")
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        store.record_checkpoint(run, step, tmp_path / f"checkpoint-{step}")
    (tmp_path / "checkpoint-2").rmdir()
    assert [c["step"] for c in store.list_checkpoints(run)] == [4, 6]
