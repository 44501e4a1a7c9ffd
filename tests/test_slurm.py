"""The Slurm launch for real: a private single-node Slurm (munge, slurmctld, slurmd on loopback) runs the
generated sbatch script of a GRPO job on the tiny model; cancelling the job runs scancel.

Skips cleanly where Debian's slurm-wlm (slurmctld, slurmd, munge) is not installed or cannot start (not root).
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from trainers.config import GrpoJobConfig
from trainers.launch import build_command
from workbench.store import Store

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """{"SLURM_CONF": ...} of a running single-node cluster made for this module; its daemons stop afterwards."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    if missing or os.geteuid() != 0 or not Path("/etc/munge/munge.key").is_file():
        pytest.skip(f"no single-node Slurm here (missing: {missing or 'root or the munge key'})")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir()
    (folder / "munge").chmod(0o700)
    socket_path = folder / "munge" / "munge.socket"
    host = socket.gethostname()
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=workbench", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}", "AuthType=auth/munge", f"AuthInfo=socket={socket_path}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/builtin",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "SlurmUser=root", "SlurmdUser=root",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'ctld.pid'}", f"SlurmdPidFile={folder / 'd.pid'}",
        f"SlurmctldLogFile={folder / 'ctld.log'}", f"SlurmdLogFile={folder / 'd.log'}", "ReturnToService=2",
        "MpiDefault=none", "JobCompType=jobcomp/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"]) + "\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    own = folder / "munge"
    munged = subprocess.run(["munged", "--force", f"--socket={socket_path}", f"--pid-file={own / 'munged.pid'}",
                             f"--log-file={own / 'munged.log'}", f"--seed-file={own / 'seed'}"],
                            capture_output=True, text=True)
    if munged.returncode != 0:
        pytest.skip(f"munged does not start here: {munged.stderr.strip()}")
    daemons = [subprocess.Popen([name, "-D"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for name in ("slurmctld", "slurmd")]
    try:
        def idle() -> bool:
            done = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            return done.stdout.strip() == "idle"

        try:
            _wait(idle, 60, "the Slurm node to be idle")
        except AssertionError:
            pytest.skip("slurmctld/slurmd did not come up here")
        yield {"SLURM_CONF": str(conf)}
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=30)
        pid = (folder / "munge" / "munged.pid").read_text().strip()
        os.kill(int(pid), signal.SIGTERM)


def _job(store: Store, config: GrpoJobConfig, run_id: str) -> tuple[str, list[str]]:
    command = build_command(config, run_id=run_id)
    return store.create_job("grpo", config.to_dict(), command, log_path="", run_id=run_id), command


def _state(slurm: dict, slurm_id: str) -> str:
    done = subprocess.run(["scontrol", "show", "job", slurm_id, "-o"], env={**os.environ, **slurm},
                          capture_output=True, text=True)
    return next((f.split("=", 1)[1] for f in done.stdout.split() if f.startswith("JobState=")), "")


@pytest.fixture
def items(workbench_home, tmp_path):
    from trainers.demo_data import prepare_demo_data
    from trainers.modeling import resolve_model_path

    resolve_model_path("tiny")
    return prepare_demo_data(tmp_path / "demo", Store(), count=4, seed=5)


def test_the_sbatch_script_trains_and_the_job_row_tracks_the_slurm_job(slurm, items, workbench_home):
    store = Store()
    config = GrpoJobConfig(data_files=[str(items.steps_file)], mode="steps", launcher="slurm", model="tiny",
                           num_generations=2, per_device_train_batch_size=2, max_steps=2, save_steps=0,
                           max_pixels=56 * 56, min_pixels=28 * 28, max_completion_length=16,
                           gradient_checkpointing=False)
    job_id, command = _job(store, config, "slurm-run")
    env = {**os.environ, **slurm, "WORKBENCH_JOB_ID": job_id, "PYTHONPATH": str(REPO)}  # this test's home
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    cluster_id = store.get_job(job_id)["cluster_job_id"]
    assert cluster_id, done.stdout + done.stderr
    assert cluster_id.startswith("slurm:") and _state(slurm, cluster_id.split(":")[1]) == "COMPLETED"
    run = store.get_run("slurm-run")
    assert run["status"] == "succeeded" and run["summary"]["steps"] == 2
    assert {row["step"] for row in store.metrics_since("slurm-run", names=["loss"])} == {1, 2}


def test_cancelling_the_job_cancels_the_slurm_job(slurm, items, workbench_home):
    store = Store()
    config = GrpoJobConfig(data_files=[str(items.steps_file)], mode="steps", launcher="slurm", model="tiny",
                           num_generations=2, per_device_train_batch_size=2, max_steps=10_000, save_steps=0,
                           max_pixels=56 * 56, min_pixels=28 * 28, max_completion_length=16)
    job_id, command = _job(store, config, "slurm-cancel")
    env = {**os.environ, **slurm, "WORKBENCH_JOB_ID": job_id, "PYTHONPATH": str(REPO)}  # this test's home
    wrapper = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        cluster_id = _wait(lambda: store.get_job(job_id)["cluster_job_id"], 60, "the Slurm job id on the job row")
        slurm_id = cluster_id.split(":")[1]
        _wait(lambda: _state(slurm, slurm_id) == "RUNNING", 60, "the Slurm job to run")
        wrapper.send_signal(signal.SIGTERM)  # what workbench.jobs.cancel sends the job's process group
        assert wrapper.wait(timeout=60) == 143
        _wait(lambda: _state(slurm, slurm_id) in ("CANCELLED", ""), 60, "scancel to take effect")
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
