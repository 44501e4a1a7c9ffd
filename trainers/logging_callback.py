"""The TRL callback that writes a training job's progress to the workbench store.

Runs inside the job process. Per optimiser step it records every metric TRL
logged (loss, KL, learning rate, each reward component `rewards/<name>/mean`,
total `reward`, completion length, TRL's tool frequencies, `step_time`, and
the trainer's tool use per rollout batch, `tools/call_rate_degraded` etc., see
trainers.grpo; held-out evaluations arrive as the same names with an `eval_`
prefix) plus its own: the reward's standard deviation within groups
(`reward_group_std`), the tool-call rate and tool-failure rate of real tool
calls over every rank's episodes (`tools/call_rate`, `tools/calls_per_episode`,
`tools/failure_rate`) and the wall time of the step (`step_wall_time`). Every
`log_traces_every` steps it saves whole sampled
groups (all G rollouts of a prompt) as `Trace`s with per-component rewards,
advantages, the turns, tool calls and tool output images. Checkpoints are
recorded as they are saved, and the job's progress (step / max_steps) with a
note of what it is doing, for the Train tab: "step-0 evaluation: 32/200
held-out samples", "training: step 3 of 24 · 4.1 s/step · about 1 min 30 s
left", "saving a checkpoint at step 8", "final evaluation: ...".

Under a multi-process launch every rank runs the callback (the gathers are
collectives) and only the main process (trainers.ranks) writes: tool rates
count every rank's episodes, and trace groups are drawn from TRL's gathered
per-sample logs, each with the item id, gold and step type its rank logged
and the tool records its rank's episode kept.

The training loop only takes cheap snapshots (references to the trainer's
own per-sample logs); metric values go to a `MetricLogger` (appended in
memory, committed by its writer thread: at once after a quiet spell, else at
most every 0.2 s), and one more writer thread stores images, builds traces and
records checkpoints and progress, so logging costs the step almost nothing.
A job killed with SIGKILL keeps everything committed before the kill; it loses
at most the metric values logged in the last 0.2 s (workbench/metric_log.py)
and the trace/checkpoint writes still queued.
"""

import math
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainers.ranks import is_main_process
from trainers.trace_builder import RolloutSnapshot, build_trace
from workbench.metric_log import MetricLogger
from workbench.store import Store
from workbench.versions import require_private_api

SKIPPED_LOG_KEYS = {"total_flos"}


class BatchWriter:
    """One background thread applying store writes in order; `flush` waits for all queued work."""

    def __init__(self, store: Store):
        self.store = store
        self._queue: queue.Queue[Callable[[Store], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="workbench-store-writer", daemon=True)
        self._thread.start()
        self.errors: list[str] = []

    def submit(self, work: Callable[[Store], None]) -> None:
        self._queue.put(work)

    def _loop(self) -> None:
        while True:
            work = self._queue.get()
            try:
                if work is None:
                    return
                work(self.store)
            except Exception as exc:  # logging must never stop training; report and go on
                message = f"{type(exc).__name__}: {exc}"
                if message not in self.errors:
                    print(f"[workbench] store write failed: {message}", file=sys.stderr, flush=True)
                self.errors.append(message)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=30)


@dataclass
class BatchColumns:
    """Dataset columns of each generation batch, for traces; the first reward call hands them over.

    They go into TRL's per-sample logs through the `log_extra` reward argument:
    TRL gathers those columns from every rank in the same order as the prompts
    and completions it logs, so a group sampled on any rank finds its item id,
    gold and step type at its own index. `values` keeps the local batch for
    callers without TRL's logs.
    """

    NAMES = ("item_id", "gt", "type", "solution", "question")
    PREFIX = "workbench/"
    values: dict[str, list] = field(default_factory=dict)

    def remember(self, kwargs: dict[str, Any]) -> None:
        self.values = {k: list(kwargs[k]) for k in self.NAMES if isinstance(kwargs.get(k), list)}
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            for name, values in self.values.items():
                log_extra(self.PREFIX + name, values)

    def get(self, name: str, index: int, logs: dict | None = None) -> Any:
        """Column `name` of sample `index` of TRL's gathered logs (`logs`), else of the local batch."""
        extra = (logs or {}).get("extra") or {}
        column = extra.get(self.PREFIX + name)
        if column is None:
            column = self.values.get(name)
        return column[index] if column is not None and index < len(column) else None


def all_ranks_tool_rates(environments: list[Any]) -> dict[str, float]:
    """tools/call_rate, calls_per_episode and failure_rate over the episodes of every rank.

    A collective (every rank calls it at the same step, with or without
    episodes): each rank adds its counts, rank 0 logs the totals.
    """
    from trainers.ranks import gather

    calls = [env.tool_calls for env in environments]
    local = (len(calls), sum(1 for c in calls if c), sum(len(c) for c in calls),
             sum(1 for c in calls for record in c if not record.ok))
    episodes, with_calls, count, failed = (sum(column) for column in zip(*gather([local])))
    if not episodes:
        return {}
    return {"tools/call_rate": with_calls / episodes, "tools/calls_per_episode": count / episodes,
            "tools/failure_rate": failed / count if count else 0.0}


def group_std(totals: list[float], group_size: int) -> float | None:
    """Mean over groups of the (sample) standard deviation of the total reward within each group.

    >>> round(group_std([1.0, 0.0, 2.0, 2.0], 2), 4)
    0.3536
    """
    stds = []
    for start in range(0, len(totals) - group_size + 1, group_size):
        values = [v for v in totals[start:start + group_size] if not math.isnan(v)]
        if len(values) >= 2:
            mean = sum(values) / len(values)
            stds.append(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)))
    return sum(stds) / len(stds) if stds else None


NOTE_EVERY_S = 0.5  # the job row's note is rewritten at most this often (evaluation batches are quick)


def duration_text(seconds: float) -> str:
    """A short duration for people.

    >>> duration_text(42), duration_text(95), duration_text(3725)
    ('42 s', '1 min 35 s', '1 h 2 min')
    """
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class FinalCheckpointCallback(TrainerCallback):
    """Saves a checkpoint at the last step even when max_steps is not a multiple of save_steps."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


class StoreLoggingCallback(TrainerCallback):
    """Writes metrics, sampled rollout groups, checkpoints and progress of a run to the store."""

    def __init__(self, store: Store, run_id: str, *, job_id: str | None = None, max_steps: int,
                 num_generations: int = 1, reward_weights: dict[str, float] | None = None,
                 protocol_name: str = "tags", mode: str = "steps", model_id: str = "",
                 log_traces_every: int = 1, trace_groups: int = 1, seed: int = 0, max_turns: int = 5,
                 batch_columns: BatchColumns | None = None):
        self.store = store
        self.run_id = run_id
        self.job_id = job_id
        self.max_steps = max_steps
        self.num_generations = num_generations
        self.reward_weights = reward_weights or {}
        self.protocol_name = protocol_name
        self.mode = mode
        self.model_id = model_id
        self.log_traces_every = log_traces_every
        self.trace_groups = trace_groups
        self.max_turns = max_turns
        self.batch_columns = batch_columns or BatchColumns()
        self._rng = random.Random(seed)
        self._trainer: Any = None
        self._writer: BatchWriter | None = None
        self._metrics: MetricLogger | None = None
        self._step_started: float | None = None
        self._pending: dict[str, float] = {}
        self._step_times: list[float] = []
        self._eval_batches = 0
        self._noted_at = 0.0
        self.main_thread_seconds = 0.0  # time this callback took from the training loop
        self.traces_written = 0

    def attach(self, trainer: Any) -> "StoreLoggingCallback":
        """Give the callback the trainer whose per-sample logs and environments it samples."""
        if getattr(trainer, "_logs", None) is not None:  # GRPO's per-sample logs: private, so version-checked
            require_private_api("trl", trainer, "_logs")
        self._trainer = trainer
        trainer.add_callback(self)
        return self

    # -- lifecycle ---------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if is_main_process() and self._writer is None:  # one definition for the run row and the metrics
            self._writer = BatchWriter(self.store)
            self._metrics = MetricLogger(self.store)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    # -- what the job is doing, for the Train tab (rate-limited, written off the training thread) ----------
    def _note(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._writer is None or not self.job_id or (not force and now - self._noted_at < NOTE_EVERY_S):
            return
        self._noted_at = now
        job_id = self.job_id
        self._writer.submit(lambda store: store.update_job(job_id, note=text))

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        self._eval_batches += 1
        total = len(eval_dataloader) if eval_dataloader is not None else 0
        size = args.per_device_eval_batch_size
        step, last = state.global_step, self.max_steps or state.max_steps
        when = ("step-0 evaluation" if step == 0 else "final evaluation" if step >= last
                else f"evaluation at step {step}")
        done = f"{self._eval_batches * size}/{total * size}" if total else f"{self._eval_batches * size}"
        self._note(f"{when}: {done} held-out samples", force=self._eval_batches == 1)

    def on_evaluate(self, args, state, control, **kwargs):
        self._eval_batches = 0
        self._note(f"training: step {state.global_step} of {self.max_steps or state.max_steps}", force=True)

    def on_step_end(self, args, state, control, **kwargs):
        began = time.perf_counter()
        trainer = self._trainer
        sampled = trainer is not None and hasattr(trainer, "_logs")
        every = self.log_traces_every
        # Collectives first, on every rank alike: tool counts and the chosen groups' tool records.
        extras = self._sample_metrics(trainer) if sampled else {}
        snapshots = self._snapshots(trainer, state.global_step) if sampled and every and \
            state.global_step % every == 0 else []
        if self._writer is None:
            return
        if self._step_started is not None:
            self._pending["step_wall_time"] = began - self._step_started
            self._step_times.append(began - self._step_started)
        total = self.max_steps or state.max_steps
        if control.should_save:
            self._note(f"saving a checkpoint at step {state.global_step}", force=True)
        elif self._step_times:
            per_step = sum(self._step_times[-10:]) / len(self._step_times[-10:])
            left = max(0, total - state.global_step) * per_step
            self._note(f"training: step {state.global_step} of {total} · {per_step:.1f} s/step · "
                       f"about {duration_text(left)} left", force=True)
        self._pending.update(extras)
        if snapshots:
            self._writer.submit(lambda store, s=snapshots: self._save_traces(store, s))
        self.main_thread_seconds += time.perf_counter() - began

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._writer is None or not logs:
            return
        began = time.perf_counter()
        step = state.global_step
        values = {k: float(v) for k, v in logs.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in SKIPPED_LOG_KEYS
                  and math.isfinite(float(v))}
        values.update(self._pending)
        self._pending = {}
        self._metrics.log(self.run_id, step, values)
        total = self.max_steps or state.max_steps
        job_id = self.job_id
        if job_id and total:
            progress = min(1.0, step / total)
            self._writer.submit(lambda store: store.update_job(job_id, progress=progress))
        self.main_thread_seconds += time.perf_counter() - began

    def on_save(self, args, state, control, **kwargs):
        if self._writer is None:
            return
        step = state.global_step
        path = Path(args.output_dir) / f"checkpoint-{step}"
        self._writer.submit(lambda store: store.record_checkpoint(self.run_id, step, path))

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- per-step extras -------------------------------------------------------
    def _sample_metrics(self, trainer: Any) -> dict[str, float]:
        values: dict[str, float] = {}
        totals = self._totals(trainer)
        spread = group_std(totals, self.num_generations)
        if spread is not None:
            values["reward_group_std"] = spread
        if self.mode == "episodes":  # every rank has episodes (or none) in this mode: the collective matches
            values.update(all_ranks_tool_rates(getattr(trainer, "environments", None) or []))
        return values

    def _totals(self, trainer: Any) -> list[float]:
        per_reward = trainer._logs["rewards"]
        count = len(trainer._logs["advantages"])
        totals = []
        for i in range(count):
            total, seen = 0.0, False
            for name, weight in self.reward_weights.items():
                column = per_reward.get(name)
                value = column[i] if column is not None and i < len(column) else float("nan")
                if not math.isnan(value):
                    total, seen = total + weight * value, True
            totals.append(total if seen else float("nan"))
        return totals

    def _snapshots(self, trainer: Any, step: int) -> list[RolloutSnapshot]:
        """References to the sampled groups' rollouts; the writer thread turns them into traces.

        TRL's logs hold the samples of every rank (rank order), so groups are
        drawn from all of them, with any per-device batch size. Every rank
        draws the same groups (same seed, same calls) and sends the tool
        records of its own episodes in them; only rank 0 keeps the snapshots.
        """
        logs = trainer._logs
        completions = list(logs["completion"])
        groups = len(completions) // self.num_generations
        if groups == 0:
            return []
        chosen = sorted(self._rng.sample(range(groups), min(self.trace_groups, groups)))
        records = self._chosen_tool_records(trainer, chosen)
        if self._writer is None:
            return []
        prompts, advantages = list(logs["prompt"]), list(logs["advantages"])
        per_reward = {name: list(values) for name, values in logs["rewards"].items()}
        snapshots = []
        for group in chosen:
            for sample in range(self.num_generations):
                i = group * self.num_generations + sample
                rewards = {name: values[i] for name, values in per_reward.items()
                           if i < len(values) and not math.isnan(values[i])}
                column = self.batch_columns.get
                snapshots.append(RolloutSnapshot(
                    prompt=prompts[i], completion=completions[i], rewards=rewards,
                    advantage=advantages[i] if i < len(advantages) else None, step=step, group=group,
                    sample_index=sample, item_id=column("item_id", i, logs), gold=column("gt", i, logs),
                    step_type=column("type", i, logs), solution=column("solution", i, logs),
                    tool_records=records.get(i) if self.mode == "episodes" else None))
        return snapshots

    def _chosen_tool_records(self, trainer: Any, chosen: list[int]) -> dict[int, list]:
        """Tool records of the chosen groups' episodes, by index in TRL's logs, from every rank (a collective)."""
        if self.mode != "episodes":
            return {}
        from trainers.ranks import gather, process_rank

        environments = getattr(trainer, "environments", None) or []
        local = len(environments)
        wanted = {group * self.num_generations + sample for group in chosen for sample in range(self.num_generations)}
        offset = process_rank() * local  # TRL gathers each rank's equal share in rank order
        mine = [(offset + j, list(env.records)) for j, env in enumerate(environments) if offset + j in wanted]
        return dict(gather(mine))

    def _save_traces(self, store: Store, snapshots: list[RolloutSnapshot]) -> None:
        traces = [build_trace(store, snapshot, run_id=self.run_id, weights=self.reward_weights,
                              protocol_name=self.protocol_name, mode=self.mode, model_id=self.model_id,
                              max_turns=self.max_turns)
                  for snapshot in snapshots]
        store.save_traces(traces)
        self.traces_written += len(traces)
