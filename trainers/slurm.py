"""Training on a Slurm cluster: the sbatch script of a job, and the job-side wrapper around it.

`sbatch_script(config, node_command, ...)` writes what Slurm runs: one task
per node (`srun`), each starting `accelerate launch` with the node's rank
(`$SLURM_NODEID`), the first node as the rendezvous host, and the job's
settings as flags (trainers.launch builds that command). `python -m
trainers.slurm SCRIPT` is the command of the workbench job: it submits the
script with `sbatch --parsable`, records the Slurm job id on the job row
(`cluster_job_id`, "slurm:<id>"), waits for the Slurm job to end (polling
`scontrol show job`), exits with its result, and on cancel (SIGTERM from the
jobs module) runs `scancel <id>`. The run's store (WORKBENCH_HOME) must be on a filesystem
every node sees; rank 0 alone writes to it.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainers.config import TrainJobConfig

POLL_S = 5.0


def sbatch_script(config: TrainJobConfig, node_command: list[str], *, job_name: str, log_path: Path,
                  workdir: Path, environment: dict[str, str]) -> str:
    """The batch script; `node_command` is one node's argv, with NODE_RANK / HEAD_NODE standing for its values.

    >>> text = sbatch_script(type("C", (), {"nodes": 2, "gpus": 4, "slurm_partition": "gpu", "slurm_time": ""})(),
    ...     ["python", "--machine_rank", "NODE_RANK"], job_name="j", log_path=Path("/l"), workdir=Path("/w"),
    ...     environment={"WORKBENCH_HOME": "/h"})
    >>> "#SBATCH --nodes=2" in text and "#SBATCH --gres=gpu:4" in text and '"$SLURM_NODEID"' in text
    True
    """
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={config.nodes}",
             "#SBATCH --ntasks-per-node=1", f"#SBATCH --output={log_path}", f"#SBATCH --chdir={workdir}"]
    if config.gpus:
        lines.append(f"#SBATCH --gres=gpu:{config.gpus}")
    if config.slurm_partition:
        lines.append(f"#SBATCH --partition={config.slurm_partition}")
    if config.slurm_time:
        lines.append(f"#SBATCH --time={config.slurm_time}")
    lines += ["set -euo pipefail"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
    lines += ['export HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)']
    words = []
    for part in node_command:  # the rank and the head are known only on each node, inside srun's shell
        quoted = shlex.quote(part)
        words.append({"NODE_RANK": '"$SLURM_NODEID"', "HEAD_NODE": '"$HEAD_NODE"'}.get(part, quoted))
    lines.append("srun --ntasks-per-node=1 bash -c " + shlex.quote("exec " + " ".join(words)))
    return "\n".join(lines) + "\n"


def submit(script: Path) -> str:
    """`sbatch --parsable SCRIPT`; the Slurm job id."""
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch refused the job: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def state(slurm_id: str) -> str | None:
    """The Slurm job's state (PENDING, RUNNING, COMPLETED, FAILED, ...); None once Slurm forgot it."""
    done = subprocess.run(["scontrol", "show", "job", slurm_id, "-o"], capture_output=True, text=True, check=False)
    for field in done.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


def exit_code(slurm_id: str) -> int:
    done = subprocess.run(["scontrol", "show", "job", slurm_id, "-o"], capture_output=True, text=True, check=False)
    for field in done.stdout.split():
        if field.startswith("ExitCode="):
            return int(field.split("=", 1)[1].split(":")[0])
    return 1


def _record(slurm_id: str) -> None:
    job_id = os.environ.get("WORKBENCH_JOB_ID")
    if not job_id:
        return
    from workbench.store import Store

    store = Store()
    if store.get_job(job_id) is not None:
        store.update_job(job_id, cluster_job_id=f"slurm:{slurm_id}", note=f"submitted to Slurm as job {slurm_id}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m trainers.slurm SCRIPT", file=sys.stderr)
        return 2
    slurm_id = submit(Path(args[0]))
    print(f"[workbench] submitted Slurm job {slurm_id}", flush=True)
    _record(slurm_id)

    def on_term(*_):
        subprocess.run(["scancel", slurm_id], check=False)
        print(f"[workbench] cancelled Slurm job {slurm_id}", flush=True)
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    final = None
    while True:
        final = state(slurm_id)
        if final not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"):
            break
        time.sleep(POLL_S)
    code = exit_code(slurm_id) if final is not None else 1
    print(f"[workbench] Slurm job {slurm_id} ended: {final} (exit {code})", flush=True)
    return 0 if final == "COMPLETED" and code == 0 else (code or 1)


if __name__ == "__main__":
    sys.exit(main())
