"""The Hugging Face Space: the built folder passes the offline check, the check names each problem, and the
folder runs as a Space runs it (fresh venv from its requirements, non-root, no bubblewrap, namespaces refused)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench import space_host
from workbench import space
from workbench.store import Store
from workbench.ui.assets import demo_image, demo_names

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return space.build_space(tmp_path_factory.mktemp("space") / "out", space.SpaceOptions(public_demo=True))


def test_the_built_space_passes_the_check_and_ships_only_what_runs(built):
    assert space.check_space(built) == []
    front = (built / "README.md").read_text().split("---")[1]
    assert 'python_version: "3.11"' in front and "sdk_version: 6.31.0" in front and "app_file: app.py" in front
    assert not (built / "workbench" / "synth").exists() and not (built / "tests").exists()
    assert (built / "workbench/demo/model/model.safetensors").is_file()
    requirements = (built / "requirements.txt").read_text()
    assert "gradio==" in requirements and "pytest" not in requirements and "playwright" not in requirements
    assert "WORKBENCH_PUBLIC_DEMO" in (built / "app.py").read_text()
    assert (built / "packages.txt").read_text().split() == ["bubblewrap"]


def _copy(built, tmp_path) -> Path:
    folder = tmp_path / "space"
    shutil.copytree(built, folder)
    return folder


def _set_front(folder: Path, key: str, value: str | None) -> None:
    readme = folder / "README.md"
    lines = [line for line in readme.read_text().splitlines() if not line.startswith(f"{key}:")]
    if value is not None:
        lines.insert(1, f"{key}: {value}")
    readme.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("breakage, problem", [
    (lambda f: _set_front(f, "python_version", None), "front matter has no python_version"),
    (lambda f: _set_front(f, "python_version", '"3.10"'), "needs Python >=3.11"),
    (lambda f: (f / "weights.npz").write_bytes(os.urandom(11 * 1024 * 1024)), "weights.npz: 11.5 MB is over"),
    (lambda f: (f / "workbench/sessions").mkdir() or (f / "workbench/sessions/workbench.db").write_text("x"),
     "runtime data from sessions/"),
    (lambda f: (f / "workbench/notes.txt").write_text("token hf_" + "a" * 34), "looks like an access token"),
    (lambda f: (f / ".gitattributes").unlink(), "model.safetensors: 17.3 MB is over"),
])
def test_the_check_names_each_problem(built, tmp_path, breakage, problem):
    folder = _copy(built, tmp_path)
    breakage(folder)
    problems = space.check_space(folder)
    assert any(problem in p for p in problems), problems


def test_deploying_without_the_network_fails_in_one_line(built, tmp_path):
    env = dict(os.environ, HF_TOKEN="hf_" + "b" * 34, HF_HUB_OFFLINE="0")
    done = subprocess.run([sys.executable, "-m", "workbench", "space", "deploy", str(built), "--repo", "me/demo"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: could not reach the Hugging Face Hub") or "token" in done.stderr


@pytest.mark.slow
def test_the_space_runs_as_a_space_runs_it(built):
    """Fresh venv from the Space's requirements, non-root, no bwrap, namespaces refused: a demo coding item is
    answered with a successful code turn under the Landlock fallback."""
    uid, python = space_host.space_user(), space_host.reachable_python()
    if uid is None or python is None:
        pytest.skip("no non-root user, or no Python 3.11 that a non-root user may run, on this machine")
    work = Path(tempfile.mkdtemp(prefix="space-sim-"))
    try:
        work.chmod(0o755)
        folder = shutil.copytree(built, work / "space")
        venv = work / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
        install = subprocess.run([str(venv / "bin/pip"), "install", "-q", "-r", str(folder / "requirements.txt")],
                                 capture_output=True, text=True, timeout=1800)
        assert install.returncode == 0, install.stderr[-3000:]
        home, log = work / "home", work / "app.log"
        process, url = space_host.launch(folder, str(venv / "bin/python"), home, log, uid)
        try:
            space_host.wait_until_up(url, process)
        except (RuntimeError, TimeoutError) as exc:
            space_host.stop(process)
            raise AssertionError(f"{exc}: {log.read_text(errors='replace')[-3000:]}") from None
        try:
            name = next(n for n in demo_names() if n.startswith("rotation180:"))
            status, _ = space_host.ask_demo_coding_item(url, name, demo_image(name).question)
        finally:
            space_host.stop(process)
        text = log.read_text(errors="replace")
        assert "code tool: Model code runs isolated by Landlock + seccomp" in text, text[-3000:]
        assert status.startswith("done"), (status, text[-3000:])
        store = Store(home / "workbench.db")
        traces = [store.get_trace(row["id"]) for row in store.list_traces(limit=50)]
        runs = [t for t in traces if t and t.metadata.get("source") != "visual-arft chain" and
                store.get_run(t.run_id)["kind"] == "playground"]
        calls = [turn.tool_call for t in runs for turn in t.turns if turn.tool_call and turn.tool_call.name == "code"]
        assert calls and calls[0].ok and calls[0].output_images, json.dumps([c.error for c in calls])
    finally:
        shutil.rmtree(work, ignore_errors=True)
