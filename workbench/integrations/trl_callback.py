"""`WorkbenchCallback`: two lines make anyone's own TRL GRPO script show up in the workbench's Runs and Traces tabs.

    from workbench.integrations.trl_callback import WorkbenchCallback
    trainer.add_callback(WorkbenchCallback(run_name="my run"))   # or GRPOTrainer(..., callbacks=[...])

Where it writes: `home=` (a workbench home folder; default WORKBENCH_HOME or
the repository's sessions/), or `url=` + `token=` (a workbench running
elsewhere, e.g. the GPU box streams to a laptop; defaults WORKBENCH_URL and
WORKBENCH_INGEST_TOKEN), through workbench.integrations.sinks.

What it records, per logging step: every numeric value TRL logs, under TRL's
own names (loss, reward, rewards/<func>/mean, tools/call_frequency, ...);
and every `trace_every` steps `groups_per_step` whole sampled groups (all
G completions of a prompt): the prompt with its images, every completion
turn, tool calls and tool results (text and images), each reward function's
value, the weighted total and the advantage -- as workbench traces
(workbench.chat_traces). Single-turn, `tools=` and `environment_factory`
runs, LoRA or full, look the same to it: it reads what GRPOTrainer itself
keeps for its completion tables (`trainer._logs`: prompt, completion,
rewards per function, advantages, extra columns; a private attribute, so it
is version-checked by workbench.versions).

Cost to the training loop: on a step it keeps references to the chosen
groups' entries (once per generation: with steps_per_generation > 1 the
groups of one generation are logged at its first step only) and on a log it
copies a few floats; building traces, encoding images and
writing or sending happens on one background thread. With `url=` the
network is never waited on during training (batches are spooled to disk);
at the end of training it waits at most `deliver_timeout_s`.

It finds its trainer without being given it: when the first event arrives
it looks up the call stack for the `transformers.Trainer` calling it (the
callback API passes the model, not the trainer); pass `trainer=` to skip
that. Only the main process (rank 0) writes. Needs transformers and Pillow,
not Gradio.
"""

import atexit
import math
import os
import queue
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from workbench import images as image_files
from workbench.chat_traces import trace_from_chat
from workbench.ingest import Batch
from workbench.integrations.sinks import HttpSink, LocalSink
from workbench.versions import require_private_api

SKIPPED_LOG_KEYS = {"total_flos"}


class _ImageBytes:
    """put_image for traces that are sent, not stored: keeps each image's stored bytes by SHA-256."""

    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}

    def __call__(self, source: Any) -> str:
        import hashlib

        data, _, _ = image_files.encode_image(source)
        sha = hashlib.sha256(data).hexdigest()
        self.images[sha] = data
        return sha


def find_trainer(max_depth: int = 30) -> Any:
    """The transformers Trainer up the call stack (the one dispatching this callback event), or None."""
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back
    return None


class WorkbenchCallback(TrainerCallback):
    """Logs a TRL GRPO run's metrics and sampled rollout groups to a workbench (module docstring)."""

    def __init__(self, home: str | Path | None = None, *, url: str | None = None, token: str | None = None,
                 run_name: str | None = None, run_id: str | None = None, trace_every: int = 1,
                 groups_per_step: int = 1, spool_dir: str | Path | None = None, deliver_timeout_s: float = 30.0,
                 config: dict | None = None, seed: int = 0, trainer: Any = None):
        self.url = url or os.environ.get("WORKBENCH_URL") or None
        self.token = token or os.environ.get("WORKBENCH_INGEST_TOKEN") or ""
        self.home = Path(home) if home else None
        if self.url and self.home:
            raise ValueError("give either home= (a local workbench folder) or url= (a running workbench), not both")
        if trace_every < 0 or groups_per_step < 0:
            raise ValueError("trace_every and groups_per_step must be 0 (off) or more")
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.run_name = run_name or f"trl run {time.strftime('%Y-%m-%d %H:%M')}"
        self.trace_every, self.groups_per_step = trace_every, groups_per_step
        self.spool_dir = Path(spool_dir) if spool_dir else Path.home() / ".cache" / "workbench-spool" / self.run_id
        self.deliver_timeout_s = deliver_timeout_s
        self.extra_config = config or {}
        self._rng = random.Random(seed)
        self._trainer = trainer
        self._sink: Any = None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pending_groups: list[dict] = []
        self._last_generation: Any = None  # the first completion of the last snapshot (a new generation replaces it)
        self._run: dict[str, Any] = {}
        self.errors: list[str] = []
        self.main_thread_seconds = 0.0  # what the callback took from the training loop
        self.background_cpu_seconds = 0.0  # CPU its writer thread used (building, encoding, storing, spooling)
        self.batches_sent = 0

    # -- setup -------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self._thread is not None:
            return
        trainer = self._trainer or find_trainer()
        if trainer is None:
            raise RuntimeError("WorkbenchCallback could not find its trainer; pass WorkbenchCallback(trainer=...)")
        if getattr(trainer, "_logs", None) is not None:
            require_private_api("trl", trainer, "_logs")
        self._trainer = trainer
        weights = getattr(trainer, "reward_weights", None)
        names = list(getattr(trainer, "reward_func_names", []) or [])
        weights = [float(w) for w in weights.tolist()] if weights is not None else [1.0] * len(names)
        self.reward_weights = dict(zip(names, weights))
        self.num_generations = int(getattr(trainer, "num_generations", None) or getattr(args, "num_generations", 1)
                                   or 1)
        model = kwargs.get("model") or getattr(trainer, "model", None)
        model_id = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
        self._run = {"id": self.run_id, "name": self.run_name, "model_id": Path(model_id).name or model_id,
                     "config": {"source": "trl-callback", "trainer": type(trainer).__name__,
                                "max_steps": state.max_steps, "num_generations": self.num_generations,
                                "peft": hasattr(model, "peft_config"), "tools": [
                                    getattr(t, "__name__", str(t)) for t in getattr(trainer, "tools", None) or []],
                                **self.extra_config},
                     "reward_spec": {"components": {n: {"weight": w} for n, w in self.reward_weights.items()}}}
        self._sink = self._open_sink()
        self._thread = threading.Thread(target=self._work_loop, name="workbench-callback", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _open_sink(self) -> Any:
        if self.url:
            return HttpSink(self.url, self.token, self.spool_dir)
        from workbench import settings
        from workbench.store import Store

        if self.home is not None:
            current = os.environ.get("WORKBENCH_HOME")
            if current and Path(current).resolve() != self.home.resolve():
                raise ValueError(f"home={self.home} but WORKBENCH_HOME is {current}; images follow WORKBENCH_HOME, "
                                 "so set one of them only")
            os.environ["WORKBENCH_HOME"] = str(self.home)
        store = Store(settings.db_path())
        if store.get_run(self.run_id) is None:  # this process owns the run: if it dies, the app settles the run
            store.create_run(self.run_name, "train", run_id=self.run_id, model_id=self._run["model_id"],
                             config={**self._run["config"], "ingested": False}, reward_spec=self._run["reward_spec"])
        return LocalSink(store)

    # -- the training loop's side: references and a few floats -------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        if self._thread is None:
            return
        began = time.perf_counter()
        logs = getattr(self._trainer, "_logs", None)
        if logs is not None and self.trace_every and self.groups_per_step and state.global_step % self.trace_every == 0:
            snapshot = self._snapshot(logs, state.global_step)
            if snapshot is not None:
                self._pending_groups.append(snapshot)
        self.main_thread_seconds += time.perf_counter() - began

    def _snapshot(self, logs: dict, step: int) -> dict | None:
        """References to the chosen groups' samples; None when TRL has not generated since the last one
        (steps_per_generation > 1 trains several steps on one generation: its groups are logged once)."""
        completions = logs["completion"]
        if not completions or completions[0] is self._last_generation:
            return None
        self._last_generation = completions[0]
        groups = len(completions) // self.num_generations
        chosen = sorted(self._rng.sample(range(groups), min(self.groups_per_step, groups))) if groups else []
        indices = [g * self.num_generations + k for g in chosen for k in range(self.num_generations)]

        def pick(values) -> list:
            values = list(values) if not isinstance(values, list) else values
            return [values[i] if i < len(values) else None for i in indices]

        return {"step": step, "groups": chosen, "prompt": pick(logs["prompt"]), "completion": pick(completions),
                "rewards": {name: pick(values) for name, values in logs["rewards"].items()},
                "advantages": pick(logs["advantages"]), "images": pick(logs.get("images") or []),
                "extra": {name: pick(values) for name, values in (logs.get("extra") or {}).items()}}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._thread is None or not logs:
            return
        began = time.perf_counter()
        rows = [(state.global_step, key, float(value)) for key, value in logs.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in SKIPPED_LOG_KEYS
                and math.isfinite(value)]
        groups, self._pending_groups = self._pending_groups, []
        self._queue.put(("batch", rows, groups, None))
        self.main_thread_seconds += time.perf_counter() - began

    def on_train_end(self, args, state, control, **kwargs):
        if self._thread is None:
            return
        groups, self._pending_groups = self._pending_groups, []
        self._queue.put(("batch", [], groups, {"status": "succeeded",
                                               "summary": {"steps": state.global_step, "source": "trl-callback"}}))
        self.close()

    def flush(self) -> None:
        """Wait until every batch logged so far is built and handed to its sink (stored, or spooled to disk)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Send what is queued (waiting at most `deliver_timeout_s` for the network) and stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        self._sink.close(self.deliver_timeout_s)
        atexit.unregister(self.close)

    # -- the background thread: traces, images, batches ---------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            _, rows, groups, ending = item
            began = time.thread_time()
            try:
                batch = self._batch(rows, groups, ending)
                self._sink.submit(batch)
                self.batches_sent += 1
            except Exception as exc:  # logging must never stop training; report once and go on
                message = f"{type(exc).__name__}: {exc}"
                if message not in self.errors:
                    print(f"[workbench] could not log a batch: {message}", file=sys.stderr, flush=True)
                self.errors.append(message)
            finally:
                self.background_cpu_seconds += time.thread_time() - began
                self._queue.task_done()

    def _batch(self, rows: list, groups: list[dict], ending: dict | None) -> Batch:
        images = _ImageBytes()
        traces = [trace for snapshot in groups for trace in self._traces(snapshot, images)]
        ending = ending or {}
        return Batch(run=self._run, metrics=rows, traces=traces, images=images.images,
                     status=ending.get("status"), summary=ending.get("summary"))

    def _traces(self, snapshot: dict, images: _ImageBytes) -> list:
        traces, step, size = [], snapshot["step"], self.num_generations
        for position, group in enumerate(snapshot["groups"]):
            for sample in range(size):
                i = position * size + sample  # the snapshot holds only the chosen groups' samples
                if snapshot["completion"][i] is None:
                    break
                rewards = {name: float(values[i]) for name, values in snapshot["rewards"].items()
                           if i < len(values) and values[i] is not None and not math.isnan(values[i])}
                rewards["total"] = sum(self.reward_weights.get(name, 1.0) * value for name, value in rewards.items())
                completion = snapshot["completion"][i]
                if not isinstance(completion, list):  # a plain-text (non-conversational) completion
                    completion = [{"role": "assistant", "content": str(completion)}]
                prompt = snapshot["prompt"][i]
                if not isinstance(prompt, list):
                    prompt = [{"role": "user", "content": str(prompt)}]
                item = f"step{step}-group{group}"
                extra = {name: values[i] for name, values in snapshot["extra"].items() if i < len(values)}
                converted = trace_from_chat(
                    list(prompt) + list(completion), put_image=images,
                    prompt_images=snapshot["images"][i],
                    rewards=rewards, run_id=self.run_id, item_id=item, group_id=f"{self.run_id}:{item}",
                    sample_index=sample, step=step, model_id=self._run["model_id"],
                    advantage=float(advantage) if (advantage := snapshot["advantages"][i]) is not None else None,
                    metadata={"source": "trl-callback", **({"extra": extra} if extra else {})})
                if converted.notes:
                    converted.trace.metadata["notes"] = converted.notes
                traces.append(converted.trace)
        return traces
