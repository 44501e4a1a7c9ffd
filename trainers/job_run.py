"""What a training process does around the trainer: its run row, output folder, resume point, CLI.

Owns `JobContext` (store, run id, job id, output folder), `start_run` (create
or reopen the run row with the config and reward definition, mark it
running), `resume_checkpoint` (the last recorded checkpoint of the run whose
folder still exists, else the newest `checkpoint-N` in the output folder),
`finish_run` (status and summary), and the shared argument parser of the
`python -m trainers.grpo|sft` commands. The job id defaults to
WORKBENCH_JOB_ID, which the jobs supervisor sets.
"""

import argparse
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from trainers import modeling
from trainers.config import CONFIG_CLASSES, ConfigError, TrainJobConfig, config_from_dict, load_values
from trainers.preflight import validate_for_launch
from trainers.ranks import is_main_process, process_rank
from trainers.trl_names import parse_overrides
from workbench import settings
from workbench.database_file import DatabaseDamaged, disk_full_message, is_disk_full
from workbench.processes import EXIT_DISK_FULL
from workbench.store import Store

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class JobContext:
    """Where a training process writes: store rows and checkpoint folder."""

    store: Store
    run_id: str
    job_id: str | None
    output_dir: Path
    started: float


def run_output_dir(run_id: str) -> Path:
    return settings.checkpoints_dir() / run_id


def default_run_name(config: TrainJobConfig) -> str:
    if config.run_name:
        return config.run_name
    data = getattr(config, "data_files", None) or getattr(config, "trace_runs", None) or ["traces"]
    return f"{config.KIND} {config.model} on {Path(str(data[0])).stem}"


def start_run(config: TrainJobConfig, store: Store, *, run_id: str | None, job_id: str | None, model_id: str,
              reward_spec: dict | None = None) -> JobContext:
    """Create the run (or reopen it on resume / when the UI created it first) and mark it running.

    Under a multi-process launch only rank 0 writes; every rank must be given the same run id.
    """
    if not is_main_process():
        if run_id is None:
            raise ValueError("a multi-process launch needs --run-id so that every process writes to one run")
        return JobContext(store, run_id, job_id, run_output_dir(run_id), time.time())
    if run_id is None or store.get_run(run_id) is None:
        run_id = store.create_run(default_run_name(config), "train", config=config.to_dict(), model_id=model_id,
                                  reward_spec=reward_spec, job_id=job_id, run_id=run_id)
    else:
        store.update_run(run_id, status="running", config=config.to_dict(), reward_spec=reward_spec)
    if job_id and store.get_job(job_id) is not None:
        store.update_job(job_id, run_id=run_id)
    output_dir = run_output_dir(run_id)
    output_dir.mkdir(parents=True, exist_ok=True)
    return JobContext(store, run_id, job_id, output_dir, time.time())


def resume_checkpoint(context: JobContext) -> str | None:
    """The checkpoint to resume from: the last one recorded for the run, else the newest on disk."""
    for row in reversed(context.store.list_checkpoints(context.run_id)):
        if (Path(row["path"]) / "trainer_state.json").is_file():
            return row["path"]
    found = [(int(m.group(1)), p) for p in context.output_dir.glob("checkpoint-*")
             if (m := _CHECKPOINT.match(p.name)) and (p / "trainer_state.json").is_file()]
    return str(max(found)[1]) if found else None


def note_phase(context: JobContext, note: str) -> None:
    """Tell the job row what the process is doing (the Train tab shows it); rank 0 only."""
    if context.job_id and is_main_process() and context.store.get_job(context.job_id) is not None:
        context.store.update_job(context.job_id, note=note)


def finish_run(context: JobContext, status: str, summary: dict[str, Any]) -> None:
    if not is_main_process():
        return
    summary = {**summary, "duration_s": round(time.time() - context.started, 2)}
    context.store.update_run(context.run_id, status=status, summary=summary)


def _record_rank_failure(context: JobContext, error: str) -> None:
    """A failed rank other than 0 marks the run failed itself: rank 0 is then usually killed by the launcher
    (or stuck in a collective) and could not say why. The first failure recorded is kept."""
    run = context.store.get_run(context.run_id)
    if run is None or run["status"] == "failed":
        return
    rank = process_rank()
    context.store.update_run(context.run_id, status="failed", summary={
        "error": f"rank {rank}: {error}", "failed_rank": rank, "traceback": traceback.format_exc(limit=8),
        "duration_s": round(time.time() - context.started, 2)})


def succeed_run(context: JobContext, resumed_from: str | None, **fields: Any) -> None:
    """Mark the run succeeded with `fields` plus what every training run records: last metrics, checkpoints."""
    finish_run(context, "succeeded", {
        **fields, "last_metrics": context.store.last_metric_values(context.run_id),
        "checkpoints": [row["path"] for row in context.store.list_checkpoints(context.run_id)],
        "resumed_from": resumed_from})


def fail_run(context: JobContext | None, exc: BaseException) -> None:
    """Mark the run failed with the error; on a full disk the error says so (and this write may fail too)."""
    if context is None:
        return
    error = disk_full_message() if is_disk_full(exc) else f"{type(exc).__name__}: {exc}"
    if not is_main_process():
        _record_rank_failure(context, error)
        return
    run = context.store.get_run(context.run_id)
    if run is not None and run["status"] == "failed" and (run.get("summary") or {}).get("failed_rank"):
        return  # another rank failed first; rank 0's error is only the echo of it (a broken collective)
    finish_run(context, "failed", {"error": error, "traceback": traceback.format_exc(limit=8)})


class TrainingSetup(Protocol):
    """A ready trainer and what the job keeps beside it (logging, tools), as `build_*_trainer` returns it."""

    trainer: Any

    def summary(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def run_training(config: TrainJobConfig, build: Callable[[JobContext], TrainingSetup], *, store: Store,
                 run_id: str | None, job_id: str | None, resume: bool, reward_spec: dict | None = None) -> str:
    """The lifecycle every training job shares; returns the run id.

    Opens the run, builds the trainer, trains (from the run's last checkpoint
    when resuming), and ends the run succeeded with its summary, or failed
    with the error, whatever raised.
    """
    context: JobContext | None = None
    setup: TrainingSetup | None = None
    try:
        context = start_run(config, store, run_id=run_id, job_id=job_id, reward_spec=reward_spec,
                            model_id=modeling.model_id_for(config.model))
        checkpoint = resume_checkpoint(context) if resume else None
        if resume:
            print(f"[workbench] resuming from {checkpoint}" if checkpoint else
                  "[workbench] no checkpoint to resume from; starting at step 0", flush=True)
        note_phase(context, "loading the model and the data")
        setup = build(context)
        result = setup.trainer.train(resume_from_checkpoint=checkpoint)
        setup.close()
        succeed_run(context, checkpoint, steps=setup.trainer.state.global_step, train_loss=result.training_loss,
                    **setup.summary())
        note_phase(context, "finished")
        return context.run_id
    except BaseException as exc:
        if setup is not None:
            setup.close()
        fail_run(context, exc)
        raise


def argument_parser(kind: str) -> argparse.ArgumentParser:
    config_class = CONFIG_CLASSES[kind]
    settings_help = "\n".join(f"  --{f.name} ({_default_text(f)}): {f.metadata.get('help', '')}"
                              for f in fields(config_class))
    parser = argparse.ArgumentParser(
        prog=f"python -m trainers.{kind}", formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        description=f"Run a {kind.upper()} training job of the Visual-ARFT workbench.\n\n"
                    "Settings come from --config FILE (JSON) and/or --name value flags, which override the file. "
                    f"TRL's own {'GRPOConfig' if kind == 'grpo' else 'SFTConfig'} names work for the settings "
                    "they share (e.g. --per_device_train_batch_size 4); any other valid TRL field passes through "
                    "to TRL unchanged (e.g. --top_k 50); a name known to neither is refused with the closest one.",
        epilog="workbench settings:\n" + settings_help)
    parser.add_argument("--config", help="JSON config file (see trainers/config.py); optional when flags give "
                                         "the settings")
    parser.add_argument("--run-id", help="run to write to (created if missing); default: a new run")
    parser.add_argument("--job-id", default=os.environ.get("WORKBENCH_JOB_ID"),
                        help="job row to report progress to (default: $WORKBENCH_JOB_ID)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def _default_text(f) -> str:
    if f.default is not MISSING:
        return f"default {f.default!r}"
    return "default " + repr(f.default_factory()) if f.default_factory is not MISSING else "required"


def config_from_command_line(kind: str, config_file: str | None, overrides: list[str]) -> TrainJobConfig:
    """The job's config: the file's values, then `--name value` flags on top."""
    values = load_values(config_file, kind) if config_file else {"kind": kind}
    values.update(parse_overrides(overrides, error=ConfigError))
    if not config_file and len(values) == 1:
        raise ConfigError("no settings given: pass --config FILE and/or settings as --name value flags")
    return config_from_dict(values)


def cli_main(kind: str, run: Callable[..., str], argv: list[str] | None = None) -> int:
    """The shared `python -m trainers.<kind>` entry: read the config, run the job.

    Exit 0 when the run succeeded; 2 with one line on stderr for a user error
    (bad setting, missing file, unusable data: the config or the run's inputs);
    EXIT_DISK_FULL with one line when the disk filled up; 1 with the traceback
    when training itself failed (the run's summary keeps it too).
    """
    args, overrides = argument_parser(kind).parse_known_args(argv)
    try:
        config = config_from_command_line(kind, args.config, overrides)
        validate_for_launch(config)  # the checks the app makes before launching, for direct CLI use too
    except (ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run_id = run(config, store=Store(), run_id=args.run_id, job_id=args.job_id, resume=args.resume)
    except (ConfigError, FileNotFoundError, DatabaseDamaged) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if is_disk_full(exc):  # the supervisor turns this exit code into "disk full" once it can write
            print(f"error: {disk_full_message()}", file=sys.stderr)
            return EXIT_DISK_FULL
        traceback.print_exc()
        return 1
    print(f"[workbench] run {run_id} finished", flush=True)
    return 0
