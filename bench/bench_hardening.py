"""Benchmark: the hardening targets of issue 18, each figure printed beside its target.

Sandbox (per isolation mode that works here, default SandboxLimits):
- host shared memory (Shmem in /proc/meminfo, sampled every 5 ms; machine-
  wide, so other processes' changes count too) gained during one hostile job
  that tries memfds, System V and POSIX shared memory and fills its own
  folder (a tmpfs under bubblewrap, capped by the sandbox's scratch size),
  against the job's memory limit;
- how much longer the next trivial job takes after a job that created files
  as fast as it could (with the default max_files, and with no per-job cap),
  target <= 1 s;
- whether a job could change the worker's scheduling (nice, CPU affinity,
  policy, I/O priority, as every later job inherits them), target 0.
Faults (in a throw-away WORKBENCH_HOME): runs left `running` with no live
process after app start (`workbench.upkeep.at_start`), target 0, after each
of: a CLI run killed with SIGKILL mid-run, a job's process group killed,
a job killed after its run succeeded, a job whose run hits a full disk (a
small tmpfs; skipped where mounting is refused).
Exit status 1 when a target is missed.

    python bench/bench_hardening.py [--quick] [--json] [--skip-faults]
    (--quick: the sandbox figures for the isolation `auto` picks here, not both modes)
"""

import argparse
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import Figure, finish
from tests import fault_helpers
from tools import _sandbox_confine as confine
from tools.code_sandbox import CodeSandbox, SandboxLimits, SandboxUnavailable

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20
FILE_DELAY_TARGET_S = 1.0
HOSTILE_SHARED_MEMORY = """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
held = []
for _ in range(60):
    try:
        fd = os.memfd_create('hog'); os.write(fd, b'a' * (20 * 2**20)); held.append(fd)
    except OSError:
        break
for _ in range(8):
    segment = libc.syscall(SHMGET, 0, 64 * 2**20, 0o1600)
    if segment >= 0:
        ctypes.memset(ctypes.c_void_p(libc.shmat(segment, None, 0)), 1, 64 * 2**20)
try:
    from multiprocessing import shared_memory
    shared_memory.SharedMemory(create=True, size=256 * 2**20).buf[:] = b'a' * (256 * 2**20)
except Exception:
    pass
for i in range(40):  # the job's own folder: a tmpfs under bubblewrap
    try:
        with open(f'fill{i}.bin', 'wb') as f:
            f.write(b'a' * (20 * 2**20))
    except OSError:
        break
"""
FILE_MAKER = "i = 0\nwhile True:\n    open(f'f{i}', 'w').close()\n    i += 1\n"
SCHEDULING = ("import os\nprint(os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)), "
              "os.sched_getscheduler(0))")
CHANGE_SCHEDULING = """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for target in (os.getppid(), 0):
    for change in (lambda: os.setpriority(os.PRIO_PROCESS, target, 19), lambda: os.sched_setaffinity(target, {0}),
                   lambda: os.sched_setscheduler(target, os.SCHED_IDLE, os.sched_param(0)),
                   lambda: os.setpriority(os.PRIO_USER, 0, 19), lambda: os.setpriority(os.PRIO_PGRP, 0, 19)):
        try:
            change()
        except OSError:
            pass
    libc.syscall(IOPRIO_SET, 1, target, 3 << 13)
"""


def shared_memory_growth(sandbox: CodeSandbox, image: Path) -> int:
    code = HOSTILE_SHARED_MEMORY.replace("SHMGET", str(confine.syscall_number("shmget")))
    limits = replace(sandbox.limits, wall_time_s=20, cpu_time_s=20)
    return fault_helpers.shared_memory_growth(lambda: sandbox.run(code, image, limits=limits))[2]


def next_job_delay(sandbox: CodeSandbox, image: Path, limits: SandboxLimits) -> float:
    quick = "print('next')"
    baseline = statistics.median(timed(sandbox, quick, image) for _ in range(5))
    sandbox.run(FILE_MAKER, image, limits=limits)
    return timed(sandbox, quick, image) - baseline


def timed(sandbox: CodeSandbox, code: str, image: Path) -> float:
    started = time.perf_counter()
    sandbox.run(code, image)
    return time.perf_counter() - started


def scheduling_changed(sandbox: CodeSandbox, image: Path) -> bool:
    before = sandbox.run(SCHEDULING, image).stdout
    sandbox.run(CHANGE_SCHEDULING.replace("IOPRIO_SET", str(confine.syscall_number("ioprio_set"))), image)
    return sandbox.run(SCHEDULING, image).stdout != before


def sandbox_figures(image: Path, modes: tuple[str, ...] = ("bwrap", "landlock")) -> list[tuple[str, str, str, bool]]:
    rows = []
    for mode in modes:
        try:
            sandbox = CodeSandbox(isolation=mode)
        except SandboxUnavailable as exc:
            rows.append((f"[{mode}] sandbox", "unavailable", str(exc)[:60], True))
            continue
        with sandbox:
            limit = sandbox.limits.memory_mb * MiB
            growth = shared_memory_growth(sandbox, image)
            rows.append((f"[{mode}] host Shmem growth, one hostile job", f"{growth / MiB:.1f} MiB",
                         f"<= {limit / MiB:.0f} MiB (memory limit)", growth <= limit))
            hog = replace(sandbox.limits, wall_time_s=10, cpu_time_s=10)
            for label, limits in (("default max_files", hog), ("no per-job file cap", replace(hog, max_files=10**7))):
                delay = next_job_delay(sandbox, image, limits)
                rows.append((f"[{mode}] next job's delay after a file maker ({label})", f"{delay:.3f} s",
                             f"<= {FILE_DELAY_TARGET_S:.0f} s", delay <= FILE_DELAY_TARGET_S))
            changed = scheduling_changed(sandbox, image)
            rows.append((f"[{mode}] jobs that changed the worker's scheduling", str(int(changed)), "0", not changed))
    return rows


# --- faults --------------------------------------------------------------------------------

def orphaned(store) -> list[str]:
    """Runs still queued/running whose recorded process is gone and that no queued/running job owns."""
    from workbench.processes import is_running

    owned = {job["run_id"] for status in ("queued", "running") for job in store.list_jobs(status=status)}
    return [run["id"] for run in store.unfinished_runs()
            if run["id"] not in owned and not is_running(run["owner_pid"], run["owner_start"])]


def wait(predicate, timeout: float = 90.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def owning_run(run_id: str, then: str) -> list[str]:
    return [sys.executable, "-c", f"import os, signal, time\nfrom workbench.store import Store\nstore = Store()\n"
                                  f"store.create_run('bench', 'eval', run_id={run_id!r})\n{then}\n"]


def cli_run_killed(store) -> None:
    image = next((ROOT / "workbench/demo/items/images").iterdir())
    process = subprocess.Popen([sys.executable, "-m", "workbench", "run", "--model", "tiny", "--image", str(image),
                                "--question", "What is it?", "--tools", "", "--max-new-tokens", "4096", "--samples",
                                "4", "--temperature", "1.0"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait(lambda: store.list_runs(kind="playground"))
    process.kill()
    process.wait()


def job_group_killed(store) -> None:
    from workbench import jobs

    job_id = jobs.submit(store, "eval", {}, owning_run("groupkilled", "time.sleep(120)"), run_id="groupkilled")
    wait(lambda: store.get_run("groupkilled") is not None)
    os.killpg(store.get_job(job_id)["pid"], signal.SIGKILL)


def job_killed_after_success(store) -> None:
    from workbench import jobs

    then = "store.update_run('finished', status='succeeded')\nos.killpg(0, signal.SIGKILL)"
    job_id = jobs.submit(store, "eval", {}, owning_run("finished", then), run_id="finished")
    wait(lambda: jobs.is_alive(store.get_job(job_id)) is False)


def job_on_a_full_disk(store) -> None:
    from workbench import jobs

    home = Path(os.environ["WORKBENCH_HOME"])
    marker = Path(tempfile.mkdtemp()) / "pid"
    then = (f"open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
            "while True:\n    store.log_metrics('diskfull', 0, {'loss': 1.0})\n    time.sleep(0.01)")
    job_id = jobs.submit(store, "eval", {}, owning_run("diskfull", then), run_id="diskfull")
    wait(lambda: marker.is_file() and marker.read_text())
    filler = home / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    for chunk in (b"\0" * MiB, b"\0" * 4096, b"\0"):
        try:
            while True:
                os.write(fd, chunk)
        except OSError:
            continue
    os.close(fd)
    child = int(marker.read_text())
    wait(lambda: not Path(f"/proc/{child}").exists() or " Z " in Path(f"/proc/{child}/stat").read_text(), 30)
    time.sleep(0.5)
    filler.unlink()
    wait(lambda: store.get_job(job_id)["status"] != "running", 15)


def fault_figures() -> list[tuple[str, str, str, bool]]:
    scenarios = [("CLI run killed -9 mid-run", cli_run_killed, False),
                 ("job process group killed -9", job_group_killed, False),
                 ("job killed after its run succeeded", job_killed_after_success, False),
                 ("job's run hits a full disk", job_on_a_full_disk, True)]
    rows = []
    for name, scenario, needs_small_disk in scenarios:
        with tempfile.TemporaryDirectory(prefix="bench-hardening-") as folder:
            home, mounted = Path(folder) / "home", False
            if needs_small_disk:
                home.mkdir()
                mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(home)],
                                         capture_output=True).returncode == 0
                if not mounted:
                    rows.append((f"runs left running after app start: {name}", "skipped",
                                 "(cannot mount a tmpfs here)", True))
                    continue
            os.environ["WORKBENCH_HOME"] = str(home / "wb")
            try:
                rows.append(run_fault(name, scenario))
            finally:
                if mounted:
                    subprocess.run(["umount", "-l", str(home)], capture_output=True)
    return rows


def run_fault(name: str, scenario) -> tuple[str, str, str, bool]:
    from workbench import upkeep
    from workbench.store import Store

    store = Store()
    scenario(store)
    time.sleep(0.3)
    upkeep.at_start(Store())  # what the app does first
    left = orphaned(store)
    return (f"runs left running after app start: {name}", str(len(left)), "0", not left)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-faults", action="store_true", help="only the sandbox figures")
    parser.add_argument("--quick", action="store_true", help="sandbox figures for the isolation auto picks only")
    parser.add_argument("--json", action="store_true", help="print the figures as a table and one JSON line")
    args = parser.parse_args()
    from PIL import Image

    modes = ("bwrap", "landlock")
    if args.quick:
        with CodeSandbox() as sandbox:
            modes = (sandbox.isolation_in_use,)
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "input.png"
        Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
        rows = sandbox_figures(image, modes)
    if not args.skip_faults:
        rows += fault_figures()
    if args.json:
        return finish([as_figure(*row) for row in rows], as_json=True)
    width = max(len(row[0]) for row in rows)
    print(f"{'figure':{width}}  {'measured':>12}  target")
    for figure, value, target, ok in rows:
        print(f"{figure:{width}}  {value:>12}  {target}  {'ok' if ok else 'MISSED'}")
    return 0 if all(row[3] for row in rows) else 1


def as_figure(label: str, value: str, target: str, ok: bool) -> Figure:
    """A printed row as a report figure: its label as a name, the number and unit of its value."""
    name = "hardening_" + "_".join(re.findall(r"[a-z0-9]+", label.lower().replace("'s ", " ")))
    number, _, unit = value.partition(" ")
    try:
        ours = float(number)
    except ValueError:  # "unavailable", "skipped": no number, the reason stays in the note
        return Figure(name, math.nan, "", target if ok else f"{target} (not measured)", ok, note=f"{value} {target}")
    return Figure(name, ours, unit, target, ok)


if __name__ == "__main__":
    sys.exit(main())
