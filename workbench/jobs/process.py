"""The supervisor that runs inside a job: `python -m workbench.jobs.process JOB_ID`.

It runs the job row's command (argv, no shell) as its child, forwards
SIGTERM, asks the kernel to kill the child if the supervisor itself dies
(PR_SET_PDEATHSIG), and writes the outcome (exit code, status) back to the
row unless the job was cancelled meanwhile; a failed job's run is settled too.
When the disk is full (the child exited with EXIT_DISK_FULL, or writing the
outcome fails with a full disk) it keeps trying every few seconds, so the
job and its run end as "disk full" once space returns, not as a mystery.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

from workbench import jobs
from workbench.database_file import DatabaseDamaged, disk_full_message, is_disk_full
from workbench.processes import EXIT_DISK_FULL
from workbench.store import Store

PR_SET_PDEATHSIG = 1
DISK_FULL_RETRY_S = 2.0


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(job_id: str) -> int:
    try:
        store = Store()
    except DatabaseDamaged as exc:
        print(f"workbench.jobs.process: {exc}", file=sys.stderr)
        return 2
    job = store.get_job(job_id)
    if job is None:
        print(f"workbench.jobs.process: no job {job_id}", file=sys.stderr)
        return 2
    env = dict(os.environ, WORKBENCH_JOB_ID=job_id)
    print(f"$ {' '.join(job['command'])}", flush=True)
    child = subprocess.Popen(job["command"], stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    code = child.wait()
    error = None if code == 0 else f"exited with code {code}; see the log"
    if code == EXIT_DISK_FULL:
        error = disk_full_message()
    while True:  # on a full disk nothing can be written: wait for space, so the job ends honestly
        try:
            record_outcome(store, job_id, code, error)
            return code
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            if code != 0:
                error = disk_full_message()
            time.sleep(DISK_FULL_RETRY_S)


def record_outcome(store: Store, job_id: str, code: int, error: str | None) -> None:
    """Write the job's end (unless it was cancelled meanwhile) and settle its run.

    A job killed after its run had already succeeded did its work: it is succeeded, with its exit code.
    """
    current = store.get_job(job_id)
    if not current or current["status"] != "running":
        return
    status = "succeeded" if code == 0 or jobs.run_succeeded(store, current) else "failed"
    store.update_job(job_id, status=status, exit_code=code, finished_at=time.time(),
                     error=None if status == "succeeded" else error)
    jobs.settle_run(store, store.get_job(job_id))  # e.g. the trainer was killed before it could say so


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
