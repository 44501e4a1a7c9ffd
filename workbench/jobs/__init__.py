"""Background jobs (training, evaluation): a job is a database row, not an object in memory.

`submit` records a queued row; `tick` (called at app start and by the UI's
poll) reconciles rows whose process died and starts queued jobs up to the
concurrency limit. Each job runs as `python -m workbench.jobs.process JOB_ID`
in its own session/process group: that supervisor starts the job's command
(no shell), waits, and writes the exit status, so jobs outlive the app and
the browser. Cancel kills the whole process group. A PID is only trusted
together with its recorded start time, so a reused PID is never killed.

A job's run cannot mark itself when its process is killed, so whoever ends
the job settles the run (`settle_run`): the supervisor when the command
exits, `cancel`, and `reconcile` for jobs whose process died -- at app start
and every few seconds while the app is up (`workbench.upkeep`), whichever
tab is open. `reconcile` also fails runs that no job owns whose own process
is gone (`settle_orphaned_runs`: Playground, CLI and eval runs record their
process on the row; a run streamed in from a training script elsewhere has no
process here, so it is failed only after INGESTED_QUIET_S without a batch). `watch.JobWatch` is one viewer's
cheap "what changed" copy of the job rows.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench import settings
from workbench.processes import is_running, process_start_time
from workbench.store import Store

DEFAULT_MAX_RUNNING = 1
ACTIVE_STATUSES = ("queued", "running")
INGESTED_QUIET_S = 6 * 3600  # a run streamed from elsewhere (workbench.ingest) that went this long silent has died
ENDED_STATUSES = ("succeeded", "failed", "cancelled")
_children: dict[str, subprocess.Popen] = {}  # reaped on tick so finished children don't linger as zombies


def max_running() -> int:
    return int(os.environ.get("WORKBENCH_MAX_JOBS", DEFAULT_MAX_RUNNING))


def is_alive(job: dict) -> bool:
    return is_running(job.get("pid"), job.get("pid_start"))


def submit(store: Store, kind: str, config: dict, command: list[str], *, run_id: str | None = None) -> str:
    """Queue a job (its command is an argv list; no shell) and start it if a slot is free."""
    if not isinstance(command, list) or not command or not all(isinstance(p, str) for p in command):
        raise ValueError("a job command must be a non-empty list of strings")
    job_id = store.create_job(kind, config, command, log_path="", run_id=run_id)
    store.update_job(job_id, log_path=str(settings.jobs_dir() / f"{job_id}.log"))
    tick(store)
    return job_id


def tick(store: Store) -> None:
    """Reconcile dead jobs, then start queued ones while slots are free. Cheap; call it often."""
    reconcile(store)
    running = len(store.list_jobs(status="running"))
    for job in sorted(store.list_jobs(status="queued"), key=lambda j: j["created_at"]):
        if running >= max_running():
            break
        _start(store, job)
        running += 1


def reconcile(store: Store) -> list[str]:
    """Give every job and run whose process is gone its final state; returns the ids of the jobs failed here.

    A dead running job is failed (or succeeded, when its run had already succeeded: the kill came after the
    work was done) and its run settled; then every run still going whose own process is gone, that no live
    job owns, is failed too -- Playground, CLI and eval runs as much as training ones.
    """
    for job_id, child in list(_children.items()):
        if child.poll() is not None:
            del _children[job_id]
    failed = []
    for job in store.list_jobs(status="running"):
        if is_alive(job):
            continue
        current = store.get_job(job["id"])  # the supervisor may have just written the outcome
        if current["status"] == "running":
            if run_succeeded(store, current):
                store.update_job(job["id"], status="succeeded", finished_at=time.time())
                continue
            store.update_job(job["id"], status="failed", finished_at=time.time(),
                             error=current["error"] or "the job's process died without reporting "
                                                       "(killed, or the machine restarted)")
            failed.append(job["id"])
    for job in store.ended_jobs_with_running_runs():  # e.g. failed before this check, run left behind
        settle_run(store, job)
    settle_orphaned_runs(store)
    return failed


def run_succeeded(store: Store, job: dict) -> bool:
    """The job's run already says succeeded (a job killed after that still did its work)."""
    run = store.get_run(job["run_id"]) if job.get("run_id") else None
    return run is not None and run["status"] == "succeeded"


def settle_orphaned_runs(store: Store) -> list[str]:
    """Fail runs still queued/running whose process is gone and that no queued or running job owns.

    First writes this process's own endings that could not be written before (a full disk): those keep
    their real error. Returns the ids of the runs settled.
    """
    settled = store.retry_unsaved_endings()
    active_jobs = {job["run_id"] for status in ACTIVE_STATUSES for job in store.list_jobs(status=status)}
    for run in store.unfinished_runs():
        if run["id"] in active_jobs or run["running_here"]:
            continue
        if run["owner_pid"] is None and (run["config"] or {}).get("ingested"):
            if time.time() - (run["updated_at"] or 0) < INGESTED_QUIET_S:
                continue  # a remote training script's run (workbench.ingest): its own last batch ends it
            summary = dict(run["summary"] or {})
            summary.setdefault("error", f"its training script sent nothing for {INGESTED_QUIET_S // 3600} hours "
                                        "and never said it ended (killed, or its machine went away)")
            store.update_run(run["id"], status="failed", summary=summary)
            settled.append(run["id"])
            continue
        if run["owner_pid"] != os.getpid() and is_running(run["owner_pid"], run["owner_start"]):
            continue
        summary = dict(run["summary"] or {})
        who = f" (pid {run['owner_pid']})" if run["owner_pid"] else ""
        summary.setdefault("error", f"the process running it{who} ended without recording an outcome (killed, "
                                    "crashed, or the machine restarted)")
        store.update_run(run["id"], status="failed", summary=summary)
        settled.append(run["id"])
    return settled


def other_active_job(store: Store, run_id: str, job_id: str) -> dict | None:
    """Another queued or running job on the same run (a resumed job owns the run then)."""
    for status in ACTIVE_STATUSES:
        for row in store.list_jobs(status=status):
            if row["run_id"] == run_id and row["id"] != job_id:
                return row
    return None


def settle_run(store: Store, job: dict) -> bool:
    """Give a failed or cancelled job's run the job's status if the run still says it is going.

    A run whose process was killed cannot mark itself. Returns whether the run changed.
    """
    if job["status"] not in ("failed", "cancelled") or not job.get("run_id"):
        return False
    run = store.get_run(job["run_id"])
    if run is None or run["status"] not in ACTIVE_STATUSES:
        return False
    if other_active_job(store, run["id"], job["id"]) is not None:
        return False
    summary = dict(run["summary"] or {})
    summary.setdefault("error", job.get("error") or f"the job was {job['status']}")
    store.update_run(run["id"], status=job["status"], summary=summary)
    return True


def _start(store: Store, job: dict) -> None:
    log_path = Path(job["log_path"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, WORKBENCH_HOME=str(settings.home()), PYTHONUNBUFFERED="1")
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "workbench.jobs.process", job["id"]], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            cwd=str(settings.REPO_ROOT))
    _children[job["id"]] = child
    store.update_job(job["id"], status="running", pid=child.pid, pid_start=process_start_time(child.pid),
                     started_at=time.time(), note="starting: importing torch, transformers and the tools")


def cancel(store: Store, job_id: str, grace_s: float = 5.0) -> None:
    """Stop a job and every process it started (a queued job is simply dropped); its run is settled."""
    job = store.get_job(job_id)
    if job is None:
        raise ValueError(f"no job {job_id}")
    if job["status"] not in ("queued", "running"):
        return
    store.update_job(job_id, status="cancelled", finished_at=time.time())
    if job["status"] == "running" and is_alive(job):
        _kill_group(job["pid"], grace_s)
    child = _children.pop(job_id, None)
    if child is not None:
        child.wait(timeout=grace_s)
    settle_run(store, store.get_job(job_id))


def _kill_group(pid: int, grace_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace_s
    while time.time() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        child = next((c for c in _children.values() if c.pid == pid), None)
        if child is not None and child.poll() is not None:
            break
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def log_tail(store: Store, job_id: str, max_bytes: int = 20_000) -> str:
    """The end of a job's log, for the UI."""
    job = store.get_job(job_id)
    path = Path(job["log_path"]) if job and job["log_path"] else None
    if path is None or not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - max_bytes))
        return handle.read().decode("utf-8", errors="replace")
