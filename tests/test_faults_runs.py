"""Every run reaches a final state: kill -9 mid-run, a kill after the run finished, a full disk.

The processes are real (the workbench CLI, job supervisors running small
Python programs that own a run through the real Store); "app start" is
`workbench.upkeep.at_start`, what the app runs first. After each fault no
run may be left `running` with no live process behind it.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fault_helpers import fill_disk, orphaned_runs
from workbench import jobs, settings, upkeep
from workbench.agent.config import RunnerConfig
from workbench.store import Store

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.faults
DEMO_IMAGE = next((ROOT / "workbench/demo/items/images").iterdir())


def wait_until(predicate, timeout=30.0, every=0.05, store: Store | None = None) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if store is not None:
            jobs.tick(store)
        if predicate():
            return True
        time.sleep(every)
    return False


def owning_run(run_id: str, then: str) -> list[str]:
    """A job command: a real process that creates run `run_id` through the Store, then does `then`."""
    code = (f"import os, signal, sys, time\nfrom workbench.store import Store\nstore = Store()\n"
            f"store.create_run('owned by a job', 'eval', run_id={run_id!r})\n{then}\n")
    return [sys.executable, "-c", code]


def test_cli_run_killed_mid_run_is_failed_at_app_start():
    store = Store()
    run = subprocess.Popen([sys.executable, "-m", "workbench", "run", "--model", "tiny", "--image", str(DEMO_IMAGE),
                            "--question", "What is it?", "--tools", "", "--max-new-tokens", "4096", "--samples", "4",
                            "--temperature", "1.0"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: store.list_runs(kind="playground"), timeout=90), run.stderr
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.kill()
        run.wait()
    [row] = store.list_runs(kind="playground")
    assert row["status"] == "running" and orphaned_runs(store) == [row["id"]]
    upkeep.at_start(Store())
    row = store.get_run(row["id"])
    assert row["status"] == "failed" and "ended without recording an outcome" in row["summary"]["error"]
    assert orphaned_runs(store) == []


def test_a_killed_job_is_settled_while_the_app_is_up_whatever_the_tab():
    store = Store()
    stop = upkeep.start(store, every_s=0.2)  # the app is up; nobody has the Train tab open (no tick)
    try:
        job_id = jobs.submit(store, "eval", {}, owning_run("killedjobrun", "time.sleep(120)"), run_id="killedjobrun")
        assert wait_until(lambda: (store.get_run("killedjobrun") or {}).get("status") == "running")
        os.killpg(store.get_job(job_id)["pid"], signal.SIGKILL)  # supervisor and its child at once
        assert wait_until(lambda: store.get_run("killedjobrun")["status"] == "failed", timeout=5)
    finally:
        stop.set()
    assert store.get_job(job_id)["status"] == "failed" and orphaned_runs(store) == []


@pytest.mark.parametrize("victim", ["the_trainer", "trainer_and_supervisor"])
def test_a_kill_after_the_run_succeeded_leaves_job_and_run_agreeing(victim):
    store = Store()
    kill = "os.kill(os.getpid(), signal.SIGKILL)" if victim == "the_trainer" else "os.killpg(0, signal.SIGKILL)"
    then = f"store.update_run('donerun', status='succeeded', summary={{'steps': 3}})\n{kill}"
    job_id = jobs.submit(store, "eval", {}, owning_run("donerun", then), run_id="donerun")
    assert wait_until(lambda: store.get_job(job_id)["status"] not in jobs.ACTIVE_STATUSES, store=store)
    job = store.get_job(job_id)
    assert (job["status"], store.get_run("donerun")["status"]) == ("succeeded", "succeeded"), job
    upkeep.at_start(store)
    assert orphaned_runs(store) == []


# --- a full disk ---------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(small_tmpfs, monkeypatch):
    """WORKBENCH_HOME on a tmpfs of 160 MiB that the test can fill."""
    home = small_tmpfs(160) / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    settings.home()
    return home


def test_a_job_whose_run_hits_a_full_disk_ends_as_disk_full_once_space_returns(tiny_disk, tmp_path):
    store = Store()
    pid_file = tmp_path / "child.pid"  # off the full disk, so the test knows when the job's process is gone
    then = (f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
            "while True:\n    store.log_metrics('fullrun', 0, {'loss': 1.0})\n    time.sleep(0.01)")
    job_id = jobs.submit(store, "eval", {}, owning_run("fullrun", then), run_id="fullrun")
    assert wait_until(lambda: pid_file.is_file() and pid_file.read_text())
    filler = fill_disk(tiny_disk)
    child = int(pid_file.read_text())
    assert wait_until(lambda: not Path(f"/proc/{child}").exists() or
                      Path(f"/proc/{child}/stat").read_text().split(") ")[1].startswith("Z"))
    time.sleep(0.5)  # the supervisor has tried to write the outcome and found the disk full
    assert store.get_job(job_id)["status"] == "running" and jobs.is_alive(store.get_job(job_id))
    filler.unlink()
    assert wait_until(lambda: store.get_job(job_id)["status"] == "failed", timeout=10)
    assert store.get_job(job_id)["error"].startswith("disk full")
    assert store.get_run("fullrun")["status"] == "failed"
    assert store.get_run("fullrun")["summary"]["error"].startswith("disk full")
    upkeep.at_start(store)
    assert orphaned_runs(store) == []


@pytest.mark.slow
def test_a_playground_run_that_hits_a_full_disk_says_so_and_is_failed_once_space_returns(tiny_disk):
    from workbench.ui import tab_playground
    from workbench.ui.context import UIContext
    from workbench.ui.deployment import DeploymentPolicy, Viewer

    store = Store()
    ctx = UIContext(store=store, policy=DeploymentPolicy())
    filled: list[Path] = []

    def fill_once_the_run_exists():
        if wait_until(lambda: store.list_runs(kind="playground"), timeout=120, every=0.01):
            filled.append(fill_disk(tiny_disk))

    filler = threading.Thread(target=fill_once_the_run_exists)
    filler.start()
    config = RunnerConfig(tools=(), samples=2, temperature=1.0, max_new_tokens=256, max_turns=3)
    with pytest.raises(tab_playground.PlaygroundError) as refused:
        for _ in tab_playground.run_playground(ctx, Viewer(), [str(DEMO_IMAGE)], None, "What is it?", "tiny", None,
                                               config):
            pass
    filler.join()
    assert str(refused.value).startswith("disk full") and "Error" not in str(refused.value)
    [run] = store.list_runs(kind="playground")
    assert run["status"] == "running"  # nothing can be written yet
    filled[0].unlink()
    upkeep.tick(store)
    run = store.get_run(run["id"])
    assert run["status"] == "failed" and run["summary"]["error"].startswith("disk full")
    assert orphaned_runs(store) == []


def test_an_image_write_on_a_full_disk_leaves_no_temporary_file(tiny_disk):
    from PIL import Image

    from workbench import images

    filler = fill_disk(tiny_disk)
    with pytest.raises(OSError):
        images.put_image(Image.effect_noise((256, 256), 50))
    assert list(settings.images_dir().rglob(".tmp-*")) == []
    filler.unlink()
