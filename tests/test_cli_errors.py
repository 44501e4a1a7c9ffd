"""Every command line answers a user error with one line on stderr and exit code 2, never a traceback.

A table drives each CLI (`workbench`, `trainers.grpo`, `trainers.sft`,
`tools.code_sandbox`, `tools.search`) through a bad config, a bad image, a
missing file, an unknown benchmark and a missing sandbox, as a user would
meet them. `--debug` brings the traceback back for whoever wants it.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    name: str
    argv: list[str]  # {tmp} and {image} are filled in
    message: str
    code: int = 2
    no_sandbox: bool = False  # bwrap off the PATH and forced: no isolation can start

    @property
    def id(self) -> str:
        return self.name

    @property
    def fast(self) -> bool:
        """No torch behind it (training CLIs import TRL; running a question loads a model), or the one kept."""
        loads_torch = self.argv[1].startswith("trainers.") or self.argv[2] == "run" and self.no_sandbox
        return not loads_torch or self.name == "grpo-unknown-key"


def _files(tmp: Path) -> dict[str, str]:
    image = tmp / "card.png"
    Image.new("RGB", (64, 48), "yellow").save(image)
    (tmp / "broken.png").write_bytes(image.read_bytes()[:60])  # a real PNG, cut short
    (tmp / "notes.png").write_text("not an image")
    (tmp / "bad.json").write_text("{not json")
    (tmp / "unknown_key.json").write_text(json.dumps({"data_files": [str(tmp / "items.json")], "nmu_steps": 3}))
    (tmp / "items.json").write_text(json.dumps([{"id": "1", "question": "q?", "answers": ["a"],
                                                 "image_path": "card.png", "type": ["none"]}]))
    (tmp / "code.py").write_text("print(1)\n")
    (tmp / "preds.json").write_text(json.dumps([{"id": 1, "gt": "a", "pred_answer": "a"}]))
    (tmp / "rows.jsonl").write_text(json.dumps({"kind": "image", "solution": "<answer> a </answer>",
                                                "completion": "a"}) + "\n")
    return {"tmp": str(tmp), "image": str(image)}


CASES = [
    # workbench: bad image, missing file, unknown benchmark, bad files
    Case("run-corrupt-image", ["-m", "workbench", "run", "--image", "{tmp}/broken.png", "--question", "q"],
         "broken.png: the image data is damaged or incomplete"),
    Case("run-not-an-image", ["-m", "workbench", "run", "--image", "{tmp}/notes.png", "--question", "q"],
         "notes.png: this is not an image file"),
    Case("run-missing-image", ["-m", "workbench", "run", "--image", "{tmp}/nope.png", "--question", "q"],
         "no such file"),
    Case("score-missing-file", ["-m", "workbench", "score", "--benchmark", "mat-coding",
                                "--predictions", "{tmp}/nope.json"], "nope.json"),
    Case("score-bad-json", ["-m", "workbench", "score", "--benchmark", "mat-coding", "--predictions",
                            "{tmp}/bad.json"], "bad.json"),
    Case("score-unknown-benchmark", ["-m", "workbench", "score", "--benchmark", "mmlu", "--predictions",
                                     "{tmp}/preds.json"], "invalid choice: 'mmlu'"),
    Case("eval-unknown-benchmark", ["-m", "workbench", "eval", "--benchmark", "vqa", "--data", "{tmp}/items.json"],
         "invalid choice: 'vqa'"),
    Case("eval-missing-data", ["-m", "workbench", "eval", "--benchmark", "mat-coding", "--data",
                               "{tmp}/nope.json"], "nope.json"),
    Case("import-missing-file", ["-m", "workbench", "import", "{tmp}/nope.jsonl"], "nope.jsonl"),
    Case("import-bad-chains", ["-m", "workbench", "import", "{tmp}/bad.json", "--format", "chains"], "bad.json"),
    Case("space-check-missing-folder", ["-m", "workbench", "space", "check", "{tmp}/no-space"],
         "is not a folder; build it first"),
    Case("space-deploy-no-token", ["-m", "workbench", "space", "deploy", "{tmp}/no-space", "--repo", "me/x"],
         "build it first"),
    Case("reward-unknown-kind", ["-m", "workbench", "reward", "--preset", "paper", "--input", "{tmp}/rows.jsonl"],
         "rows.jsonl row 0: kind 'image' is unknown; use code or search"),
    Case("reward-missing-input", ["-m", "workbench", "reward", "--input", "{tmp}/nope.jsonl"], "nope.jsonl"),
    Case("reward-bad-json", ["-m", "workbench", "reward", "--input", "{tmp}/bad.json"], "bad.json"),
    Case("reward-unknown-preset", ["-m", "workbench", "reward", "--preset", "released", "--input",
                                   "{tmp}/rows.jsonl"], "invalid choice: 'released'"),
    Case("export-unknown-run", ["-m", "workbench", "export", "--run", "nosuchrun", "--out", "{tmp}/x.jsonl"],
         "no run 'nosuchrun'"),
    # training CLIs: bad config files and settings
    Case("grpo-bad-json", ["-m", "trainers.grpo", "--config", "{tmp}/bad.json"], "is not valid JSON"),
    Case("grpo-missing-config", ["-m", "trainers.grpo", "--config", "{tmp}/nope.json"], "cannot read config"),
    Case("grpo-unknown-key", ["-m", "trainers.grpo", "--config", "{tmp}/unknown_key.json"],
         "did you mean max_steps"),
    Case("grpo-bad-value", ["-m", "trainers.grpo", "--data_files", "{tmp}/items.json", "--num_generations", "1"],
         "num_generations=1"),
    Case("grpo-missing-data", ["-m", "trainers.grpo", "--data_files", "{tmp}/nope.json"], "does not exist"),
    Case("grpo-no-settings", ["-m", "trainers.grpo"], "no settings given"),
    Case("sft-bad-value", ["-m", "trainers.sft", "--trace_runs", "r1", "--max_length", "3"], "at least 64"),
    Case("sft-missing-trace-file", ["-m", "trainers.sft", "--trace_files", "{tmp}/nope.jsonl"], "does not exist"),
    # tools
    Case("sandbox-missing-input", ["-m", "tools.code_sandbox", "--input", "{tmp}/nope.png", "--code",
                                   "{tmp}/code.py"], "does not exist"),
    Case("search-missing-corpus", ["-m", "tools.search", "q", "--corpus", "{tmp}/nope.jsonl"], "nope.jsonl"),
    # no sandbox at all: the tool CLI and training refuse in one line; the agent still answers
    Case("sandbox-unavailable", ["-m", "tools.code_sandbox", "--input", "{image}", "--code", "{tmp}/code.py"],
         "no sandbox isolation works here", no_sandbox=True),
    Case("grpo-code-episodes-without-sandbox", ["-m", "trainers.grpo", "--data_files", "{tmp}/items.json",
                                                "--mode", "episodes", "--num_generations", "2",
                                                "--per_device_train_batch_size", "2"],
         "the code tool cannot run here", no_sandbox=True),
    Case("run-without-sandbox", ["-m", "workbench", "run", "--image", "{image}", "--question", "q",
                                 "--max-new-tokens", "8", "--max-turns", "1"],
         "Code execution is off on this host", code=0, no_sandbox=True),
]


def _run(case: Case, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    names = _files(tmp_path)
    env = dict(os.environ, WORKBENCH_HOME=str(tmp_path / "home"))
    if case.no_sandbox:
        env.update(PATH=str(tmp_path), CODE_SANDBOX_ISOLATION="bwrap")  # bwrap is not on this PATH
    argv = [part.format(**names) for part in case.argv]
    module_end = 2
    return subprocess.run([sys.executable, *argv[:module_end], *extra, *argv[module_end:]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _tiered(cases: list[Case]) -> list:
    """A case that imports TRL and torch costs ~6 s: one stays in the fast tier, the rest are slow."""
    return [pytest.param(case, id=case.id, marks=() if case.fast else pytest.mark.slow) for case in cases]


@pytest.mark.parametrize("case", _tiered(CASES))
def test_user_errors_are_one_line_and_exit_2(case, tmp_path):
    done = _run(case, tmp_path)
    assert done.returncode == case.code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert case.message in done.stderr, done.stderr[-2000:]
    if case.code == 2 and "invalid choice" not in case.message:  # argparse adds its usage line
        problem_lines = [line for line in done.stderr.splitlines() if line.startswith("error")]
        assert len(problem_lines) == 1, done.stderr


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("run-corrupt-image", "score-bad-json")],
                         ids=lambda c: c.id)
def test_debug_shows_the_traceback(case, tmp_path):
    done = _run(case, tmp_path, "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr
