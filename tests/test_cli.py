"""The command line, run as a user would: `python -m workbench ...` in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from workbench.store import Store

ROOT = Path(__file__).resolve().parent.parent


def workbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "card.png"
    Image.new("RGB", (96, 64), "yellow").save(path)
    return path


def test_help_lists_the_subcommands():
    result = workbench("--help")
    assert result.returncode == 0
    for command in ("run", "eval", "score", "export", "import", "build-tiny-model"):
        assert command in result.stdout


def test_run_prints_and_stores_a_trace_as_json(image):
    result = workbench("run", "--image", str(image), "--question", "What colour is the card?",
                       "--max-new-tokens", "16", "--max-turns", "2", "--json")
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)
    assert trace["question"] == "What colour is the card?" and trace["model_id"] == "demo-tiny-qwen2.5-vl"
    assert trace["stop_reason"] in ("answered", "max_turns", "parse_error", "tool_error")
    assert 1 <= len(trace["turns"]) <= 2 and trace["turns"][0]["completion_tokens"] > 0
    stored = Store().get_trace(trace["id"])
    assert stored is not None and stored.to_dict() == trace


@pytest.mark.parametrize("make_args, message", [
    (lambda img, tmp: ["--image", str(img), "--question", "   "], "question is empty"),
    (lambda img, tmp: ["--image", str(tmp / "nope.png"), "--question", "q"], "no such file"),
    pytest.param(lambda img, tmp: ["--image", str(img), "--question", "q", "--model", str(tmp)], "config.json",
                 marks=pytest.mark.slow),
    (lambda img, tmp: ["--image", str(img), "--question", "q", "--samples", "3"], "temperature"),
])
def test_bad_input_gets_a_clear_error_and_exit_2(image, tmp_path, make_args, message):
    result = workbench("run", *make_args(image, tmp_path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_corrupt_image_is_refused_and_nothing_is_stored(tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = workbench("run", "--image", str(corrupt), "--question", "q")
    assert result.returncode == 2 and "broken.png" in result.stderr
    assert Store().count_traces() == 0


def test_score_imports_only_what_scoring_needs(tmp_path):
    """`score` is a script-sized job: no torch, model backends, store or pandas behind it."""
    predictions = tmp_path / "preds.json"
    predictions.write_text(json.dumps([{"id": 1, "gt": "a cat", "pred_answer": "cat"}]))
    probe = ("import sys\nfrom workbench.cli import main\n"
             f"argv = ['score', '--benchmark', 'multihop', '--predictions', {str(predictions)!r}, '--json']\n"
             "assert main(argv) == 0\n"
             "print(sorted(m for m in ('torch', 'transformers', 'sqlite_utils', 'pandas', 'numpy', 'gradio', "
             "'workbench.store', 'workbench.agent.runner') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["all_f1"] == 100.0
    assert done.stderr.strip() == "[]"
