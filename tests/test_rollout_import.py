"""Importing other frameworks' rollouts: verl's rollout_data_dir, OpenAI-style chat JSONL, TRL completion tables."""

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from workbench.images import image_path
from workbench.rollout_import import import_rollouts
from workbench.store import Store

REPO = Path(__file__).resolve().parent.parent


def _verl_dump(folder: Path, step: int, rows: list[dict]) -> None:
    """Lines exactly as verl's RayPPOTrainer._dump_generations writes them (columns, then one JSON per sample)."""
    n = len(rows)
    base = {"input": [r["input"] for r in rows], "output": [r["output"] for r in rows],
            "gts": [r["gts"] for r in rows], "score": [r["score"] for r in rows], "step": [step] * n,
            "acc": [r["acc"] for r in rows]}
    lines = [json.dumps({k: v[i] for k, v in base.items()}, ensure_ascii=False) for i in range(n)]
    folder.mkdir(exist_ok=True)
    (folder / f"{step}.jsonl").write_text("\n".join(lines) + "\n")


MULTI_TURN = ('<think>look closer</think>\n<tool_call>\n{"name": "zoom", "arguments": {"factor": 2}}\n</tool_call>'
              'user\n<tool_response>\nzoomed 2x\n</tool_response>\nassistant\n<answer>red</answer>')


def test_a_verl_rollout_dir_imports_as_groups_with_tool_turns_and_scores(tmp_path):
    store = Store()
    prompt = "system\nYou can zoom.\nuser\nWhat colour is it?\nassistant\n"
    _verl_dump(tmp_path / "rollouts", 1, [
        {"input": prompt, "output": MULTI_TURN, "gts": "red", "score": 1.0, "acc": 1.0},
        {"input": prompt, "output": "<answer>blue</answer>", "gts": "red", "score": 0.0, "acc": 0.0},
        {"input": "user\nAnother?\nassistant\n", "output": "no", "gts": "yes", "score": 0.0, "acc": 0.0}])
    _verl_dump(tmp_path / "rollouts", 2, [
        {"input": prompt, "output": "<answer>red</answer>", "gts": "red", "score": 1.0, "acc": 1.0}])
    report = import_rollouts(store, tmp_path / "rollouts", "verl", name="verl run")
    assert report.summary().startswith(f"imported 4 verl traces (3 groups, steps 1-2, 5 turns, 1 tool calls, 0 images)"
                                       f" as run {report.run_id}")
    assert report.summary().endswith("not mapped: nothing")
    traces = {(t.step, t.group_id, t.sample_index): t for t in
              (store.get_trace(r["id"]) for r in store.list_traces(run_id=report.run_id))}
    first = traces[(1, "verl:step1:prompt0", 0)]
    assert [turn.action for turn in first.turns] == ["zoom", "answer"]
    assert first.turns[0].tool_call.output_text == "zoomed 2x" and first.turns[0].argument == "2"
    assert first.turns[1].raw == "<answer>red</answer>" and first.gold == ["red"]
    assert first.rewards == {"score": 1.0, "acc": 1.0, "total": 1.0}
    assert traces[(1, "verl:step1:prompt0", 1)].turns[0].action == "answer"
    assert (1, "verl:step1:prompt1", 0) in traces
    metrics = {(r["step"], r["name"]): r["value"] for r in store.metrics_since(report.run_id)}
    assert metrics == {(1, "critic/score/mean"): pytest.approx(1 / 3), (2, "critic/score/mean"): 1.0}


def _data_url(colour) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _crop(call_id: str, box: list[int]) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "crop", "arguments": json.dumps({"box": box})}}


def test_openai_chat_jsonl_with_tool_calls_and_images_by_data_url_and_path(tmp_path):
    Image.new("RGB", (10, 10), (0, 0, 255)).save(tmp_path / "input.png")
    episode = {"id": "ep1", "group": "g1", "step": 3, "rewards": {"accuracy": 1.0, "format": 0.5}, "advantage": 0.7,
               "agent": "mine", "messages": [
                   {"role": "system", "content": "You are an agent."},
                   {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "input.png"}},
                                                {"type": "text", "text": "What is in the corner?"}]},
                   {"role": "assistant", "content": "Let me crop.", "tool_calls": [_crop("c1", [0, 0, 5, 5]),
                                                                                   _crop("c2", [5, 5, 9, 9])]},
                   {"role": "tool", "tool_call_id": "c1", "content": [
                       {"type": "text", "text": "cropped"},
                       {"type": "image_url", "image_url": {"url": _data_url((9, 9, 9))}}]},
                   {"role": "tool", "tool_call_id": "c2", "content": "Error: box outside the image"},
                   {"role": "assistant", "content": "A dark square."}]}
    web = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                                        {"type": "text", "text": "and this?"}]},
           {"role": "assistant", "content": "cannot see it"}]
    (tmp_path / "log.jsonl").write_text(json.dumps(episode) + "\n" + json.dumps(web) + "\n")
    store = Store()
    report = import_rollouts(store, tmp_path / "log.jsonl", "openai-chat")
    assert "2 traces" in report.summary().replace("openai-chat ", "") and "2 images" in report.summary()
    assert "1 parallel tool call(s) kept in messages only x1" in report.summary()
    assert "image not stored (https://example.com/a.png is a web address" in report.summary()
    rows = store.list_traces(run_id=report.run_id)
    trace = next(store.get_trace(r["id"]) for r in rows if r["item_id"] == "ep1")
    assert trace.question == "What is in the corner?" and trace.group_id.endswith(":g1") and trace.step == 3
    assert trace.rewards == {"accuracy": 1.0, "format": 0.5, "total": 1.5} and trace.advantage == 0.7
    crop = trace.turns[0].tool_call
    assert crop.name == "crop" and crop.argument == "[0, 0, 5, 5]" and "Error: box outside" in crop.output_text
    with Image.open(image_path(crop.output_images[0])) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (9, 9, 9)
    with Image.open(image_path(trace.images[0])) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    assert trace.final_answer == "A dark square." and trace.metadata["record"] == {"agent": "mine"}
    assert [m["role"] for m in trace.messages] == ["system", "user", "assistant", "tool", "tool", "assistant"]


def test_a_trl_table_as_wandb_writes_it(tmp_path):
    """The table GRPOTrainer.log hands to W&B/trackio (images stripped), saved as W&B's {columns, data}."""
    from trl.trainer.utils import strip_images_from_messages

    prompt = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (4, 4))},
                                           {"type": "text", "text": "Colour?"}]}]
    completions = [[{"role": "assistant", "content": "red"}], [{"role": "assistant", "content": "blue"}]]
    columns = ["step", "prompt", "completion", "accuracy", "advantage"]
    data = [[5, strip_images_from_messages(prompt), strip_images_from_messages(c), float(i == 0), 1.0 - 2 * i]
            for i, c in enumerate(completions)]
    (tmp_path / "completions.table.json").write_text(json.dumps({"columns": columns, "data": data}))
    store = Store()
    report = import_rollouts(store, tmp_path / "completions.table.json", "trl")
    assert "1 groups, steps 5-5" in report.summary() and "image TRL's table left out x2" in report.summary()
    traces = sorted((store.get_trace(r["id"]) for r in store.list_traces(run_id=report.run_id)),
                    key=lambda t: t.sample_index)
    assert [t.final_answer for t in traces] == ["red", "blue"] and [t.advantage for t in traces] == [1.0, -1.0]
    assert traces[0].rewards == {"accuracy": 1.0, "total": 1.0} and traces[0].question == "Colour?"


def test_the_cli_imports_and_a_bad_file_leaves_no_run(tmp_path, workbench_home):
    _verl_dump(tmp_path, 7, [{"input": "q", "output": "a", "gts": "a", "score": 1.0, "acc": 1.0}])
    done = subprocess.run([sys.executable, "-m", "workbench", "import", str(tmp_path / "7.jsonl"), "--format", "verl",
                           "--name", "from verl"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("imported 1 verl traces"), done.stderr
    (tmp_path / "bad.jsonl").write_text('{"messages": "not a list"}\n')
    done = subprocess.run([sys.executable, "-m", "workbench", "import", str(tmp_path / "bad.jsonl"), "--format",
                           "openai-chat"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "line 1: expected" in done.stderr
    assert [r["name"] for r in Store().list_runs()] == ["from verl"]


def test_a_trl_table_as_trackio_stores_it_with_the_logged_prompt_images(tmp_path):
    """trackio 0.43's Table._to_dict: {"_type": "trackio.table", "_value": rows}; log_multimodal adds an image column
    of {"_type": "trackio.image", "file_path": <relative to trackio's media folder>, "caption"} entries."""
    media = tmp_path / "media"
    (media / "proj" / "run").mkdir(parents=True)
    Image.new("RGB", (6, 6), (0, 128, 0)).save(media / "proj" / "run" / "0.png")
    entry = {"_type": "trackio.image", "file_path": "proj/run/0.png", "caption": None}
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    rows = [{"step": 2, "prompt": prompt, "completion": [{"role": "assistant", "content": answer}],
             "accuracy": score, "advantage": score - 0.5, "image": [entry]}
            for answer, score in (("green", 1.0), ("red", 0.0))]
    (tmp_path / "table.json").write_text(json.dumps({"_type": "trackio.table", "_value": rows}))
    store = Store()
    report = import_rollouts(store, tmp_path / "table.json", "trl", images_dir=media)
    assert report.summary().endswith("not mapped: nothing") and "2 images" in report.summary()
    trace = store.get_trace(store.list_traces(run_id=report.run_id)[0]["id"])
    with Image.open(image_path(trace.images[0])) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (0, 128, 0)
    assert trace.messages[0]["content"][0]["image"] == "sha256:" + trace.images[0]
