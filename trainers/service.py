"""Training jobs from a config, for the UI and scripts (no Gradio): preview, launch, resume, click-to-train data.

Owns the glue between the training configs and `workbench.jobs`:
- `preview_command` / `launch_training`: the exact argv a config runs (built
  by trainers.launch), refused first by the config's own checks and
  `trainers.preflight.validate_for_launch`; the job row carries the config
  and a run id chosen here, so the UI can follow the run before it starts;
- `resume_training`: a new job on the same run with `--resume` (the trainer
  continues from the run's last checkpoint);
- `prepare_demo_training`: click-to-train's data for the embedded tiny model
  (hidden-colour prompts and held-out items for the demo LoRA-GRPO; MAT-Coding-mini
  items, expert traces and a steps file for a cold-start SFT).
"""

import uuid
from dataclasses import dataclass
from typing import Any

from trainers.config import CONFIG_CLASSES, TrainJobConfig, config_from_dict
from trainers.launch import build_command, format_command
from workbench import jobs, settings
from workbench.store import Store

TRAIN_KINDS = tuple(CONFIG_CLASSES)  # ("grpo", "sft")
PREVIEW_RUN_ID = "NEW_RUN_ID"  # stands for the run id chosen at launch
DEMO_FOLDER = "demo-data-rl"  # the items moved to the rl split's seed; a new folder, so old items are not reused
DEMO_HIDDEN_FOLDER = "demo-hidden-colours"  # click-to-train's task (mat_coding_mini.generate_hidden_colours)
DEMO_PROMPTS = 400  # GRPO prompts: as many as the demo world's hidden_rl split, drawn with its seed
DEMO_HELD_OUT = 40  # as the demo world's hidden_test split: small enough that an evaluation takes seconds


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


def preview_command(config: TrainJobConfig) -> str:
    """The command `launch_training` runs for `config`, with the run id still to be chosen."""
    return format_command(build_command(config, run_id=PREVIEW_RUN_ID))


def launch_training(store: Store, config: TrainJobConfig, *, check: bool = True) -> LaunchedJob:
    """Validate (preflight) and submit a training job; returns its ids and command."""
    if check:
        from trainers.preflight import validate_for_launch  # reads the model's module list: import late

        validate_for_launch(config)
    run_id = uuid.uuid4().hex[:12]
    command = build_command(config, run_id=run_id)
    job_id = jobs.submit(store, config.KIND, config.to_dict(), command, run_id=run_id)
    return LaunchedJob(job_id, run_id, command)


def resume_training(store: Store, job_id: str, *, max_steps: int | None = None) -> LaunchedJob:
    """A new job continuing the run of training job `job_id` from its last checkpoint.

    `max_steps` raises the step budget (e.g. to train a finished run further).
    """
    job = store.get_job(job_id)
    if job is None:
        raise LaunchError(f"no job {job_id!r}; pick one from the list")
    if job["kind"] not in TRAIN_KINDS:
        raise LaunchError(f"job {job_id} is a {job['kind']} job; only training jobs resume")
    if job["status"] in jobs.ACTIVE_STATUSES:
        raise LaunchError(f"job {job_id} is still {job['status']}; wait for it or cancel it first")
    run_id = job["run_id"]
    if not run_id:
        raise LaunchError(f"job {job_id} has no run to resume")
    other = jobs.other_active_job(store, run_id, job_id)
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
    new_id = jobs.submit(store, config.KIND, config.to_dict(), command, run_id=run_id)
    return LaunchedJob(new_id, run_id, command, resumed_from_step=last_step)


def prepare_demo_training(store: Store, count: int = 64) -> dict[str, Any]:
    """Click-to-train's data, made once, then reused: GRPO prompts and held-out items of the hidden-colour task,
    and MAT-Coding-mini items with scripted-expert traces and a steps file for a cold-start SFT or steps-mode run.

    Returns {"items_file", "eval_file", "start_adapter", "steps_file", "expert_run"}: what the demo LoRA-GRPO
    (episodes, held-out reward on eval_file, from the start adapter) or a cold-start SFT job trains on.
    """
    from trainers.demo_data import DemoData, prepare_demo_data, write_steps_file
    from workbench.benchmarks import mat_coding_mini

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
        data = prepare_demo_data(folder, store, count=count, seed=mat_coding_mini.SPLIT_SEEDS["rl"])
    hidden = settings.jobs_dir() / DEMO_HIDDEN_FOLDER
    prompts, eval_file = hidden / "rl" / "mat_coding_mini.json", hidden / "test" / "mat_coding_mini.json"
    # the demo world's hidden_rl and hidden_test splits (same seeds): the start adapter's SFT saw neither
    for path, size, split in ((prompts, DEMO_PROMPTS, "rl"), (eval_file, DEMO_HELD_OUT, "test")):
        if not path.is_file():
            mat_coding_mini.generate_hidden_colours(path.parent, size, seed=mat_coding_mini.hidden_split_seed(split))
    return {"items_file": str(prompts), "eval_file": str(eval_file), "steps_file": str(data.steps_file),
            "expert_run": data.expert_run, "start_adapter": str(settings.DEMO_START_ADAPTER)}
