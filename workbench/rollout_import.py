"""Rollouts written by other frameworks, imported as a run of traces: verl dumps, OpenAI-style chat JSONL, TRL tables.

`python -m workbench import FILE --format verl|openai-chat|trl`; each format
is read as its writer writes it:

- verl (`trainer.rollout_data_dir`): checked against volcengine/verl
  b178a3cd (2026-01-29), `RayPPOTrainer._dump_generations` and
  `_log_rollout_data` in verl/trainer/ppo/ray_trainer.py: one file
  `<global_step>.jsonl` per step, one JSON object per sample with `input`
  (the prompt, decoded with skip_special_tokens=True), `output` (the response
  decoded the same way: in multi-turn runs the tool calls and the
  `<tool_response>` blocks are in it as text), `gts` (ground truth), `score`
  (the summed token-level score) and `step`, plus every reward-extra-info
  column (e.g. `acc`) as its own key. In multi-turn runs the tool results
  are part of `output` because verl/experimental/agent_loop/tool_agent_loop.py
  renders each `tool` message with the chat template into the response (loss
  masked): for Qwen-style templates, once decoded, `user\n<tool_response>
  ...</tool_response>\nassistant\n` between the model's turns, which is where
  a turn is split here. A FILE may be that folder (every
  `<step>.jsonl`) or one file. The n samples of a prompt are consecutive
  (verl repeats with interleave), so a group is a run of equal `input`s
  within a step. Images are not in verl's dump (image tokens are special
  tokens, dropped by the decode): counted in the summary. The per-step mean
  of `score` is stored as verl's metric name `critic/score/mean`.
- openai-chat: JSON Lines, each line `{"messages": [...], ...}` (or the bare
  message list): assistant messages with `tool_calls` (arguments as a JSON
  string), `tool` messages, image parts `{"type": "image_url", "image_url":
  {"url": "data:image/...;base64,..." or a file path}}`. Optional keys:
  `reward` / `score` (a number) or `rewards` (an object), `advantage`,
  `step`, `group` / `group_id`, `id`; the rest is kept in metadata.
- trl: GRPOTrainer's completion tables with `log_completions=True` --
  `<output_dir>/completions/completions_<step>.parquet` (columns `step`,
  `prompt`, `completion`, one column per reward function, the `log_extra`
  columns, `advantage`; trl/trainer/grpo_trainer.py `log`) -- a folder of
  them, or the same table as W&B stores it (`{"columns": [...], "data":
  [[...]]}`) or trackio 0.43 does (`Table._to_dict`: `{"_type":
  "trackio.table", "_value": [row, ...]}`). TRL strips the images from the
  messages (`strip_images_from_messages`); with `log_multimodal` an `image`
  column holds the prompt images (trackio: `{"file_path": ...}` relative to
  its media folder, given with --images), which fill the placeholders; the
  placeholders left empty are counted in the summary.
  Numeric columns other than step/advantage are taken as reward functions.

Whatever cannot be mapped is counted in the one summary line, never dropped
silently; a file that fails to import leaves no run behind.
"""

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.chat_traces import tool_arguments, trace_from_chat
from workbench.store import Store
from workbench.trace import ToolCall, Trace, Turn

FORMATS = ("verl", "openai-chat", "trl")
VERL_KEYS = ("input", "output", "gts", "score", "step")
TRL_KEYS = ("step", "prompt", "completion", "advantage", "image")
_TOOL_RESPONSE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.S)
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_ROLE_WORD = re.compile(r"\s*(?:user|tool|assistant)\s*$")  # what is left of a chat header once
_LEADING_ASSISTANT = re.compile(r"^\s*assistant\s*\n")  # its special tokens are decoded away


@dataclass
class RolloutImport:
    """What an import did, for its one summary line."""

    fmt: str
    run_id: str = ""
    traces: int = 0
    turns: int = 0
    tool_calls: int = 0
    images: int = 0
    groups: int = 0
    steps: set[int] = field(default_factory=set)
    unmapped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        steps = f"steps {min(self.steps)}-{max(self.steps)}" if self.steps else "no steps"
        text = (f"imported {self.traces} {self.fmt} traces ({self.groups} groups, {steps}, {self.turns} turns, "
                f"{self.tool_calls} tool calls, {self.images} images) as run {self.run_id}")
        left = "; ".join(f"{reason} x{count}" for reason, count in sorted(self.unmapped.items()))
        return f"{text}; not mapped: {left or 'nothing'}"

    def count(self, trace: Trace, notes: list[str]) -> None:
        self.traces += 1
        self.turns += len(trace.turns)
        self.tool_calls += sum(1 for t in trace.turns if t.tool_call is not None)
        self.images += len(trace.image_shas())
        if trace.step is not None:
            self.steps.add(trace.step)
        self.unmapped.update(notes)


def import_rollouts(store: Store, path: str | Path, fmt: str, name: str = "imported",
                    images_dir: str | Path | None = None) -> RolloutImport:
    """Import a file (or folder) of another framework's rollouts as a new run; returns the summary."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or folder", str(path))
    report = RolloutImport(fmt)
    report.run_id = store.create_run(name, "imported", status="succeeded", config={"source": str(path), "format": fmt})
    try:
        reader = {"verl": _verl, "openai-chat": _openai_chat, "trl": _trl}[fmt]
        traces, metrics = reader(store, path, Path(images_dir) if images_dir else None, report)
        for trace in traces:
            trace.run_id = report.run_id
        report.groups = len({t.group_id for t in traces if t.group_id})
        store.save_traces(traces)
        store.log_metric_rows((report.run_id, step, metric, value) for step, metric, value in metrics)
    except BaseException:
        store.delete_run(report.run_id)
        raise
    return report


def _json_lines(path: Path) -> list[tuple[int, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name} line {number}: not JSON ({exc})") from None
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# -- verl ------------------------------------------------------------------------------------------------------
def _verl(store: Store, path: Path, images_dir: Path | None, report: RolloutImport):
    files = sorted((p for p in path.glob("*.jsonl") if p.stem.isdigit()), key=lambda p: int(p.stem)) \
        if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no <step>.jsonl files (verl's rollout_data_dir holds one per step)")
    traces, metrics = [], []
    for file in files:
        previous_input, group, sample, scores = None, -1, 0, []
        for number, row in _json_lines(file):
            if not isinstance(row, dict) or not isinstance(row.get("input"), str) \
                    or not isinstance(row.get("output"), str):
                raise ValueError(f"{file.name} line {number}: a verl dump line needs text 'input' and 'output'")
            step = int(row["step"]) if isinstance(row.get("step"), int) else (int(file.stem) if file.stem.isdigit()
                                                                               else 0)
            if row["input"] != previous_input:
                previous_input, group, sample = row["input"], group + 1, 0
            else:
                sample += 1
            trace, notes = _verl_trace(row, step, group, sample)
            if isinstance(row.get("score"), (int, float)):
                scores.append(float(row["score"]))
            report.count(trace, notes)
            traces.append(trace)
        if scores:
            metrics.append((step, "critic/score/mean", sum(scores) / len(scores)))
    return traces, metrics


def _verl_trace(row: dict, step: int, group: int, sample: int) -> tuple[Trace, list[str]]:
    notes: list[str] = []
    turns: list[Turn] = []
    output, position = row["output"], 0
    for match in _TOOL_RESPONSE.finditer(output):  # each tool result closes the turn that called the tool
        head = _LEADING_ASSISTANT.sub("", output[position:match.start()])
        turns.append(_verl_turn(_ROLE_WORD.sub("", head), len(turns), match.group(1), notes))
        position = match.end()
    tail = _LEADING_ASSISTANT.sub("", output[position:])
    if tail.strip() or not turns:
        turns.append(_verl_turn(tail, len(turns), None, notes))
    score = _number(row.get("score"))
    rewards = {"score": score} if score is not None else {}
    metadata: dict[str, Any] = {"source": "verl"}
    for key, value in row.items():
        if key in VERL_KEYS:
            continue
        if _number(value) is not None:
            rewards[key] = _number(value)
        else:
            metadata[key] = value
    if score is not None:
        rewards["total"] = score
    gold = row.get("gts")
    gold = [str(g) for g in gold] if isinstance(gold, list) else ([str(gold)] if gold is not None else [])
    last = turns[-1]
    answered = last.tool_call is None
    trace = Trace(question=row["input"], turns=turns, messages=[{"role": "user", "content": row["input"]},
                                                                {"role": "assistant", "content": row["output"]}],
                  final_answer=last.raw.strip() if answered else None,
                  stop_reason="answered" if answered else "max_turns",
                  gold=gold, rewards=rewards, protocol="native", layout="chat", item_id=f"step{step}-prompt{group}",
                  group_id=f"verl:step{step}:prompt{group}", sample_index=sample, step=step, metadata=metadata)
    return trace, notes


def _verl_turn(text: str, index: int, response: str | None, notes: list[str]) -> Turn:
    turn = Turn(index=index, raw=text.strip())
    call = _TOOL_CALL.search(text)
    if call:
        try:
            name, argument = tool_arguments(json.loads(call.group(1)))
        except (json.JSONDecodeError, AttributeError):
            name, argument = "", call.group(1)
            notes.append("tool call that is not JSON (kept as raw text)")
        turn.action, turn.argument = name or "tool_call", argument
    elif response is None:
        turn.action, turn.argument = "answer", text.strip()
    if response is not None:
        turn.feedback = response
        turn.tool_call = ToolCall(name=turn.action or "tool", argument=turn.argument or "", output_text=response)
    return turn


# -- OpenAI-style chat JSONL ---------------------------------------------------------------------------------------
def _openai_chat(store: Store, path: Path, images_dir: Path | None, report: RolloutImport):
    traces = []
    for number, row in _json_lines(path):
        record = {"messages": row} if isinstance(row, list) else row
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise ValueError(f"{path.name} line {number}: expected {{\"messages\": [...]}} or a list of messages")
        rewards = dict(record["rewards"]) if isinstance(record.get("rewards"), dict) else {}
        rewards = {k: float(v) for k, v in rewards.items() if _number(v) is not None}
        for key in ("reward", "score"):
            if _number(record.get(key)) is not None:
                rewards.setdefault(key, float(record[key]))
        if rewards and "total" not in rewards:
            rewards["total"] = rewards.get("reward", rewards.get("score", sum(rewards.values())))
        group = record.get("group_id", record.get("group"))
        step = record.get("step") if isinstance(record.get("step"), int) else None
        kept = {k: v for k, v in record.items()
                if k not in ("messages", "rewards", "reward", "score", "advantage", "step", "group", "group_id", "id")}
        converted = trace_from_chat(
            record["messages"], put_image=store.put_image, base_dir=images_dir or path.parent, rewards=rewards,
            advantage=_number(record.get("advantage")), step=step,
            group_id=f"{path.stem}:{group}" if group is not None else None,
            item_id=str(record["id"]) if record.get("id") is not None else f"line{number}",
            metadata={"source": "openai-chat", **({"record": kept} if kept else {})})
        report.count(converted.trace, converted.notes)
        traces.append(converted.trace)
    _number_samples(traces)
    return traces, []


def _number_samples(traces: list[Trace]) -> None:
    seen: Counter = Counter()
    for trace in traces:
        if trace.group_id:
            trace.sample_index = seen[trace.group_id]
            seen[trace.group_id] += 1


# -- TRL completion tables ---------------------------------------------------------------------------------------
def _trl_rows(path: Path) -> list[dict]:
    files = sorted(path.glob("completions_*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no completions_*.parquet files (GRPOConfig(log_completions=True) writes them "
                         "in <output_dir>/completions)")
    rows = []
    for file in files:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows += pq.read_table(file).to_pylist()
            continue
        table = json.loads(file.read_text(encoding="utf-8"))
        if isinstance(table, dict) and isinstance(table.get("_value"), list):  # trackio: {"_type", "_value": rows}
            rows += [row for row in table["_value"] if isinstance(row, dict)]
        elif isinstance(table, dict) and isinstance(table.get("columns"), list) and isinstance(table.get("data"), list):
            rows += [dict(zip(table["columns"], values)) for values in table["data"]]
        else:
            raise ValueError(f"{file.name}: expected a parquet file, a W&B table {{\"columns\": [...], \"data\": "
                             "[...]}} or a trackio table {\"_type\": \"trackio.table\", \"_value\": [...]}")
    return rows


def _logged_images(value: Any) -> list[Any]:
    """The prompt images of a table row's `image` column (log_multimodal): trackio/W&B image entries or paths."""
    found = []
    for entry in value if isinstance(value, list) else []:
        if isinstance(entry, dict):
            entry = entry.get("file_path") or entry.get("path")
        if isinstance(entry, str):
            found.append(entry)
    return found


def _messages(value: Any, role: str) -> list[dict]:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
        return [{"role": role, "content": value}]
    return list(value) if isinstance(value, list) else []


def _trl(store: Store, path: Path, images_dir: Path | None, report: RolloutImport):
    rows = _trl_rows(path)
    base = path if path.is_dir() else path.parent
    traces, groups, previous = [], -1, None
    for number, row in enumerate(rows):
        if "prompt" not in row or "completion" not in row:
            raise ValueError(f"{path.name} row {number}: a TRL completion table needs 'prompt' and 'completion'")
        step = int(row["step"]) if _number(row.get("step")) is not None else None
        prompt, completion = _messages(row["prompt"], "user"), _messages(row["completion"], "assistant")
        key = (step, json.dumps(prompt, sort_keys=True, default=str))
        if key != previous:
            previous, groups, sample = key, groups + 1, 0
        else:
            sample += 1
        rewards = {k: _number(v) for k, v in row.items() if k not in TRL_KEYS and _number(v) is not None}
        if rewards:
            rewards["total"] = sum(rewards.values())  # the table has no reward_weights: TRL's default, all 1
        extra = {k: v for k, v in row.items() if k not in TRL_KEYS and k not in rewards}
        converted = trace_from_chat(
            prompt + completion, put_image=store.put_image, base_dir=images_dir or base,
            prompt_images=_logged_images(row.get("image")), rewards=rewards, advantage=_number(row.get("advantage")),
            step=step, item_id=f"step{step}-prompt{groups}", group_id=f"trl:step{step}:prompt{groups}",
            sample_index=sample, metadata={"source": "trl-table", **({"extra": extra} if extra else {})})
        placeholders = sum(1 for m in converted.trace.messages if isinstance(m.get("content"), list)
                           for b in m["content"] if b.get("type") == "image" and not b.get("image"))
        report.count(converted.trace, converted.notes + ["image TRL's table left out"] * placeholders)
        traces.append(converted.trace)
    return traces, []
