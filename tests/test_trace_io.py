"""Trace export/import round trips and run bundles (raw chains: tests/test_chains.py)."""

import json

import pytest
from PIL import Image

from workbench.store import Store
from workbench.trace import ToolCall, Trace, Turn
from workbench.trace_io import export_run, export_run_bundle, import_run_bundle, import_traces


def stored_trace(store, run_id):
    inp = store.put_image(Image.new("RGB", (50, 40), "teal"))
    out = store.put_image(Image.new("RGB", (40, 50), "orange"))
    trace = Trace(question="q", images=[inp], run_id=run_id, final_answer="a", stop_reason="answered",
                  turns=[Turn(index=0, raw="r", action="code", argument="c", image=inp,
                              tool_call=ToolCall(name="code", argument="c", output_images=[out]))])
    store.save_trace(trace)
    return trace


def test_export_then_import_into_a_fresh_home_is_identical(tmp_path, monkeypatch):
    store = Store()
    run = store.create_run("r", "eval")
    original = stored_trace(store, run)
    path = tmp_path / "export" / "traces.jsonl"
    path.parent.mkdir()
    assert export_run(store, run, path) == 1
    assert len(list((tmp_path / "export" / "traces.jsonl.images").iterdir())) == 2

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "other-home"))
    fresh = Store()
    (trace_id,) = import_traces(fresh, path)
    assert fresh.get_trace(trace_id).to_dict() == original.to_dict()
    assert fresh.get_image(original.images[0])["width"] == 50


def test_exporting_again_to_the_same_file_leaves_only_the_new_traces_images(tmp_path):
    from workbench.trace_io import export_traces, images_folder

    store = Store()
    path = tmp_path / "traces.jsonl"
    first = stored_trace(store, store.create_run("r", "eval"))
    export_traces(store, [first], path)
    second = Trace(question="q2", images=[store.put_image(Image.new("RGB", (30, 30), "navy"))], final_answer="b")
    store.save_trace(second)
    assert export_traces(store, [second], path) == 1
    assert {p.stem for p in images_folder(path).iterdir()} == {second.images[0]}
    assert not images_folder(path).with_name("traces.jsonl.images.tmp").exists()


def test_run_bundle_moves_the_run_its_metrics_and_traces_to_a_fresh_home(tmp_path, monkeypatch):
    store = Store()
    run = store.create_run("grpo demo", "train", model_id="m", config={"lr": 1e-5}, reward_spec={"format": 1.0},
                           status="succeeded")
    store.update_run(run, summary={"steps": 2})
    store.log_metrics(run, 0, {"eval_reward": 0.5})
    store.log_metrics(run, 1, {"reward": 1.0, "loss": 0.25})
    original = stored_trace(store, run)
    export_run_bundle(store, run, tmp_path / "bundle")

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "other-home"))
    fresh = Store()
    copy = import_run_bundle(fresh, tmp_path / "bundle", run_id="shipped", config={"demo": True})
    row = fresh.get_run(copy)
    assert (row["name"], row["kind"], row["status"], row["model_id"]) == ("grpo demo", "train", "succeeded", "m")
    assert row["config"] == {"lr": 1e-5, "demo": True} and row["summary"] == {"steps": 2}
    assert row["reward_spec"] == {"format": 1.0}
    assert {(m["step"], m["name"], m["value"]) for m in fresh.metrics_since(copy)} == {
        (0, "eval_reward", 0.5), (1, "reward", 1.0), (1, "loss", 0.25)}
    (trace,) = [fresh.get_trace(t["id"]) for t in fresh.list_traces(run_id=copy)]
    assert trace.turns[0].tool_call.output_images == original.turns[0].tool_call.output_images


def test_import_refuses_bad_lines_and_missing_images(tmp_path):
    store = Store()
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "colour": "red"}\n')
    with pytest.raises(ValueError, match="line 1: not a trace"):
        import_traces(store, path)
    path.write_text(json.dumps(Trace(question="q", images=["ab" * 32]).to_dict()) + "\n")
    with pytest.raises(ValueError, match="missing"):
        import_traces(store, path)
    assert store.count_traces() == 0


def test_shipped_and_exported_runs_name_no_machine_folders():
    """A run bundle carries no absolute paths of the machine that made it (the shipped demo-grpo run included)."""
    import json as json_module

    from workbench import settings as workbench_settings

    def absolute(value):
        if isinstance(value, dict):
            return [p for item in value.values() for p in absolute(item)]
        if isinstance(value, list):
            return [p for item in value for p in absolute(item)]
        return [value] if isinstance(value, str) and value.startswith("/") else []

    shipped = json_module.loads((workbench_settings.DEMO_GRPO_RUN / "run.json").read_text(encoding="utf-8"))
    assert absolute(shipped["config"]) == [] and absolute(shipped["summary"]) == []
