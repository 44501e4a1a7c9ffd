"""The supervisor that runs inside a job: `python -m workbench.jobs.process JOB_ID`.

It runs the job row's command (argv, no shell) as its child, forwards
SIGTERM, asks the kernel to kill the child if the supervisor itself dies
(PR_SET_PDEATHSIG), and writes the outcome (exit code, status) back to the
row unless the job was cancelled meanwhile; a failed job's run is settled too.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

from workbench import jobs
from workbench.database_file import DatabaseDamaged
from workbench.store import Store

PR_SET_PDEATHSIG = 1


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
    current = store.get_job(job_id)
    if current and current["status"] == "running":
        status = "succeeded" if code == 0 else "failed"
        error = None if code == 0 else f"exited with code {code}; see the log"
        store.update_job(job_id, status=status, exit_code=code, finished_at=time.time(), error=error)
        jobs.settle_run(store, store.get_job(job_id))  # e.g. the trainer was killed before it could say so
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
