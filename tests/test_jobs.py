"""Background jobs: rows, real processes, cancel of whole trees, reconcile of dead PIDs, queueing."""

import os
import signal
import sys
import time

import pytest

from workbench import jobs
from workbench.store import Store


def wait_for(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs.tick(Store())
        if predicate():
            return True
        time.sleep(0.1)
    return False


def status(store, job_id):
    return store.get_job(job_id)["status"]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_job_runs_and_reports_success_with_log():
    store = Store()
    job = jobs.submit(store, "eval", {"n": 1}, python("print('hello from the job')"))
    assert wait_for(lambda: status(store, job) == "succeeded")
    row = store.get_job(job)
    assert row["exit_code"] == 0 and row["finished_at"] >= row["started_at"]
    assert "hello from the job" in jobs.log_tail(store, job)


def test_failing_job_is_failed_with_exit_code():
    store = Store()
    job = jobs.submit(store, "eval", {}, python("import sys; sys.exit(3)"))
    assert wait_for(lambda: status(store, job) == "failed")
    assert store.get_job(job)["exit_code"] == 3


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_cancel_kills_the_whole_process_tree():
    store = Store()
    spawner = ("import subprocess, sys, time; "
               "[subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']) for _ in range(3)]; "
               "time.sleep(120)")
    job = jobs.submit(store, "train", {}, python(spawner))
    assert wait_for(lambda: status(store, job) == "running")
    time.sleep(1.0)  # let the grandchildren start
    pgid = store.get_job(job)["pid"]
    jobs.cancel(store, job)
    assert status(store, job) == "cancelled"
    assert wait_for(lambda: not _group_alive(pgid), timeout=10)


def test_kill_9_of_the_job_is_seen_as_failed_within_5_seconds():
    store = Store()
    job = jobs.submit(store, "train", {}, python("import time; time.sleep(120)"))
    assert wait_for(lambda: status(store, job) == "running")
    os.kill(store.get_job(job)["pid"], signal.SIGKILL)
    killed_at = time.time()
    assert wait_for(lambda: status(store, job) == "failed", timeout=5)
    assert time.time() - killed_at <= 5
    assert "died" in store.get_job(job)["error"]


def test_reconcile_at_start_marks_dead_rows_failed_and_ignores_reused_pids():
    store = Store()
    dead = store.create_job("train", {}, ["x"], "")
    store.update_job(dead, status="running", pid=2**22 - 1, pid_start="1")
    reused = store.create_job("train", {}, ["x"], "")  # our own PID, but another start time
    store.update_job(reused, status="running", pid=os.getpid(), pid_start="0")
    assert sorted(jobs.reconcile(store)) == sorted([dead, reused])
    assert status(store, dead) == status(store, reused) == "failed"


def test_concurrency_limit_queues_extra_jobs(monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    store = Store()
    first = jobs.submit(store, "train", {}, python("import time; time.sleep(1.5)"))
    second = jobs.submit(store, "train", {}, python("print('second')"))
    assert status(store, first) == "running" and status(store, second) == "queued"
    assert wait_for(lambda: status(store, second) == "succeeded", timeout=20)


def test_bad_commands_are_refused():
    with pytest.raises(ValueError, match="list of strings"):
        jobs.submit(Store(), "train", {}, "python train.py")
