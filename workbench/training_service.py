"""Training jobs from a config, for the UI (no Gradio): launch, preview, resume, and keep job lists current.

Owns the glue between `trainers` and `workbench.jobs`:
- `preview_command` / `launch_training`: the exact argv a config runs (built
  by trainers.launch), refused first by the config's own checks and
  `trainers.preflight.validate_for_launch`; the job row carries the config
  and a run id chosen here, so the UI can follow the run before it starts;
- `resume_training`: a new job on the same run with `--resume` (the trainer
  continues from the run's last checkpoint);
- `settle_ended_runs`: a run whose job was cancelled or died cannot mark
  itself, so its status follows the job's (for every job kind, eval too);
- `JobWatch`: one viewer's copy of job rows, kept current by reading only
  rows changed since the last poll;
- `prepare_demo_training`: MAT-Coding-mini items, expert traces and a steps
  file for click-to-train on the embedded tiny model.
"""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from trainers.config import CONFIG_CLASSES, ConfigError, TrainJobConfig, config_from_dict
from trainers.launch import build_command, format_command
from workbench import jobs, settings
from workbench.store import Store

TRAIN_KINDS = tuple(CONFIG_CLASSES)  # ("grpo", "sft")
ACTIVE_STATUSES = ("queued", "running")
ENDED_STATUSES = ("succeeded", "failed", "cancelled")
PREVIEW_RUN_ID = "NEW_RUN_ID"  # stands for the run id chosen at launch
DEMO_FOLDER = "demo-data-rl"  # the items moved to the rl split's seed; a new folder, so old items are not reused
DEMO_HELD_OUT = 100  # as many held-out items as the demo world's test split: fewer made eval_reward mostly noise


class LaunchError(ValueError):
    """A job that cannot be launched or resumed; the message says what to change."""


@dataclass
class LaunchedJob:
    """A submitted job: its row id, the run it writes to and the exact command."""

    job_id: str
    run_id: str
    command: list[str]
    resumed_from_step: int | None = None

    @property
    def command_text(self) -> str:
        return format_command(self.command)


def make_config(kind: str, values: dict[str, Any]) -> TrainJobConfig:
    """The config of `kind` from field values; ConfigError (a ValueError) says what is wrong."""
    if kind not in CONFIG_CLASSES:
        raise ConfigError(f"job kind {kind!r} is unknown; use one of {', '.join(TRAIN_KINDS)}")
    try:
        return CONFIG_CLASSES[kind](**values)
    except TypeError as exc:  # an unknown or missing field name
        raise ConfigError(f"{kind} config: {exc}") from None


def preview_command(config: TrainJobConfig) -> str:
    """The command `launch_training` runs for `config`, with the run id still to be chosen."""
    return format_command(build_command(config, run_id=PREVIEW_RUN_ID))


def launch_training(config: TrainJobConfig, *, store: Store | None = None, check: bool = True) -> LaunchedJob:
    """Validate (preflight) and submit a training job; returns its ids and command."""
    store = store or Store()
    if check:
        from trainers.preflight import validate_for_launch  # reads the model's module list: import late

        validate_for_launch(config)
    run_id = uuid.uuid4().hex[:12]
    command = build_command(config, run_id=run_id)
    job_id = jobs.submit(config.KIND, config.to_dict(), command, run_id=run_id, store=store)
    return LaunchedJob(job_id, run_id, command)


def _other_active_job(store: Store, run_id: str, job_id: str) -> dict | None:
    for status in ACTIVE_STATUSES:
        for row in store.list_jobs(status=status):
            if row["run_id"] == run_id and row["id"] != job_id:
                return row
    return None


def resume_training(job_id: str, *, max_steps: int | None = None, store: Store | None = None) -> LaunchedJob:
    """A new job continuing the run of training job `job_id` from its last checkpoint.

    `max_steps` raises the step budget (e.g. to train a finished run further).
    """
    store = store or Store()
    job = store.get_job(job_id)
    if job is None:
        raise LaunchError(f"no job {job_id!r}; pick one from the list")
    if job["kind"] not in TRAIN_KINDS:
        raise LaunchError(f"job {job_id} is a {job['kind']} job; only training jobs resume")
    if job["status"] in ACTIVE_STATUSES:
        raise LaunchError(f"job {job_id} is still {job['status']}; wait for it or cancel it first")
    run_id = job["run_id"]
    if not run_id:
        raise LaunchError(f"job {job_id} has no run to resume")
    other = _other_active_job(store, run_id, job_id)
    if other is not None:
        raise LaunchError(f"run {run_id} is already being trained by job {other['id']} ({other['status']})")
    values = dict(job["config"])
    if max_steps:
        values["max_steps"] = int(max_steps)
    config = config_from_dict(values)
    checkpoints = store.list_checkpoints(run_id)
    last_step = checkpoints[-1]["step"] if checkpoints else None
    budget = getattr(config, "max_steps", 0)
    if job["status"] == "succeeded" and last_step is not None and budget and budget <= last_step:
        raise LaunchError(f"run {run_id} already finished its {last_step} steps; raise max steps above "
                          f"{last_step} to train further")
    command = build_command(config, run_id=run_id, resume=True)
    new_id = jobs.submit(config.KIND, config.to_dict(), command, run_id=run_id, store=store)
    return LaunchedJob(new_id, run_id, command, resumed_from_step=last_step)


def settle_ended_runs(store: Store, ended_jobs: list[dict]) -> list[str]:
    """Mark runs still 'running' whose job was cancelled or failed; returns the runs changed."""
    settled = []
    for job in ended_jobs:
        if job["status"] not in ("failed", "cancelled") or not job.get("run_id"):
            continue
        run = store.get_run(job["run_id"])
        if run is None or run["status"] not in ("running", "queued"):
            continue
        if _other_active_job(store, run["id"], job["id"]) is not None:
            continue  # a resumed job owns the run now
        store.update_run(run["id"], status=job["status"])
        settled.append(run["id"])
    return settled


@dataclass
class JobWatch:
    """A viewer's copy of the job rows of some kinds; `poll` reads only rows changed since the last one."""

    kinds: tuple[str, ...]
    rows: dict[str, dict] = field(default_factory=dict)
    seen_until: float | None = None  # newest updated_at read so far; None before the first poll

    def poll(self, store: Store, limit: int = 200) -> list[dict]:
        """Start queued jobs / reconcile dead ones, then read changed rows; returns the changed rows."""
        jobs.tick(store)
        if self.seen_until is None:
            changed = store.list_jobs(limit=limit)  # first poll (or a page reload): re-attach to every job
            self.seen_until = 0.0
        else:
            changed = store.jobs_changed_since(self.seen_until)
        mine = [row for row in changed if row["kind"] in self.kinds]
        for row in changed:
            self.seen_until = max(self.seen_until, row["updated_at"] or 0.0)
        for row in mine:
            self.rows[row["id"]] = row
        settle_ended_runs(store, [row for row in mine if row["status"] in ENDED_STATUSES])
        return mine

    def listed(self, limit: int = 50) -> list[dict]:
        """Newest first."""
        return sorted(self.rows.values(), key=lambda row: -(row["created_at"] or 0.0))[:limit]

    def get(self, job_id: str | None) -> dict | None:
        return self.rows.get(job_id) if job_id else None


def job_age(row: dict, now: float | None = None) -> str:
    """How long ago a job was created, briefly.

    >>> job_age({"created_at": 100.0}, now=145.0), job_age({"created_at": 0.0}, now=7300.0)
    ('45s ago', '2h 1m ago')
    """
    seconds = int((now or time.time()) - (row["created_at"] or 0.0))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"


def prepare_demo_training(store: Store | None = None, count: int = 64) -> dict[str, Any]:
    """MAT-Coding-mini items, held-out items, scripted-expert traces and a steps file (made once, then reused).

    Returns {"items_file", "eval_file", "steps_file", "expert_run"}: what a GRPO
    (steps or episodes, held-out reward on eval_file) or a cold-start SFT job trains on.
    """
    from trainers.demo_data import DemoData, prepare_demo_data, write_steps_file
    from workbench.benchmarks import mat_coding_mini
    from workbench.synth.demo_world import RL_SEED_OFFSET

    store = store or Store()
    folder = settings.jobs_dir() / DEMO_FOLDER
    items_file = folder / "mat_coding_mini.json"
    for run in store.list_runs(kind="imported"):
        if (run["config"] or {}).get("items") == str(items_file) and run["status"] == "succeeded" \
                and items_file.is_file():
            data = DemoData(folder, items_file, folder / "coding_train.json", run["id"])
            if not data.steps_file.is_file():
                write_steps_file(data, store)
            break
    else:
        # drawn like the demo world's rl split: GRPO from the demo model gets prompts its SFT never saw
        data = prepare_demo_data(folder, store, count=count, seed=RL_SEED_OFFSET)
    eval_file = folder / f"held_out_{DEMO_HELD_OUT}" / "mat_coding_mini.json"
    if not eval_file.is_file():  # the demo world's held-out items (seed 1000): the training never sees them
        mat_coding_mini.generate(eval_file.parent, count=DEMO_HELD_OUT, seed=1000)
    return {"items_file": str(data.items_file), "eval_file": str(eval_file), "steps_file": str(data.steps_file),
            "expert_run": data.expert_run}
