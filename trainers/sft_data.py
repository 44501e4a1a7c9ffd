"""Cold-start SFT data: recorded traces -> conversations in exactly the form RL and inference use.

Traces come from the store (by run id) or from JSONL exports (one
`Trace.to_dict()` per line, images in `<file>.images/<sha>.<ext>`, as
workbench.trace_io writes them), filtered by protocol, outcome and reward.

Each trace becomes the chat layout the multi-turn GRPO rollouts and the
runner's chat layout use: the system prompt the trace was recorded with
(a model trained on one tool list and asked with another falls apart on its
second turn, so each trace keeps its own; traces without one get the
job's), the user
turn with the input image and `<query>`, then per model turn an assistant
message holding the turn's literal text (tool calls written out as text, the
FIELD-NOTES way: an empty content plus `tool_calls` renders differently in
SFT than at inference) and the tool's result as the next user message (its
output images, then its text; wrapped in `<tool_response>` for the native
protocol, as the Qwen3-VL template renders tool messages).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.config import SftJobConfig
from workbench import protocol
from workbench.store import Store
from workbench.trace import Trace
from workbench.trace_io import images_folder


@dataclass
class TraceSource:
    """A trace and where its images are."""

    trace: Trace
    image_file: Callable[[str], str]


def _store_image(sha: str) -> str:
    from workbench.images import image_path

    return str(image_path(sha))


def _folder_image(folder: Path) -> Callable[[str], str]:
    def find(sha: str) -> str:
        matches = sorted(folder.glob(f"{sha}.*"))
        if not matches:
            raise ValueError(f"image {sha[:12]} is missing from {folder}")
        return str(matches[0])
    return find


def _keep(trace: Trace, config: SftJobConfig) -> bool:
    if trace.protocol != config.protocol or not trace.images or not trace.turns:
        return False
    if config.only_answered and trace.stop_reason != "answered":
        return False
    total = trace.reward_total
    return config.min_reward is None or (total is not None and total >= config.min_reward)


def _file_traces(path: Path) -> list[Trace]:
    traces = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            traces.append(Trace.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path.name} line {number}: not a trace ({exc})") from None
    return traces


def collect_traces(config: SftJobConfig, store: Store) -> list[TraceSource]:
    """Every trace of the configured runs and files that passes the filters."""
    sources: list[TraceSource] = []
    if config.trace_runs:
        for run_id in config.trace_runs:
            if store.get_run(run_id) is None:
                raise ValueError(f"run {run_id} is not in the store; pick a run from the Runs tab")
            for row in store.list_traces(run_id=run_id, limit=10 ** 9):
                trace = store.get_trace(row["id"])
                if trace is not None and _keep(trace, config):
                    sources.append(TraceSource(trace, _store_image))
    for file in config.trace_files:
        path = Path(file)
        resolver = _folder_image(images_folder(path))
        sources += [TraceSource(t, resolver) for t in _file_traces(path) if _keep(t, config)]
    return sources


def _feedback_message(text: str, image_count: int, protocol_name: str) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "image", "text": None} for _ in range(image_count)]
    if protocol_name == "native":  # how the Qwen3-VL template renders a tool message (the user turn it opens)
        blocks = [{"type": "text", "text": "<tool_response>\n"}, *blocks, {"type": "text", "text": text + "\n"
                                                                          "</tool_response>"}]
    else:
        blocks.append({"type": "text", "text": text})
    return {"role": "user", "content": blocks}


def recorded_system_prompt(trace: Trace) -> str | None:
    """The system text the trace's model was shown, if the trace kept it."""
    first = trace.messages[0] if trace.messages else None
    if not first or first.get("role") != "system":
        return None
    content = first.get("content")
    if isinstance(content, list):
        content = "".join(block.get("text") or "" for block in content if block.get("type") == "text")
    return content or None


def conversation(source: TraceSource, system: str | Callable[[Trace], str]) -> tuple[list[dict[str, Any]], list[str]]:
    """(messages with image placeholders, image files in placeholder order) for one trace.

    `system` is the system text, or a function giving it per trace.
    """
    trace = source.trace
    images = [source.image_file(trace.images[0])]
    system_text = system(trace) if callable(system) else system
    messages = [{"role": "system", "content": [{"type": "text", "text": system_text}]},
                {"role": "user", "content": [{"type": "image", "text": None},
                                             {"type": "text", "text": protocol.query_text(trace.question)}]}]
    for position, turn in enumerate(trace.turns):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.raw}]})
        if position == len(trace.turns) - 1:
            break
        outputs = list(turn.tool_call.output_images) if turn.tool_call else []
        if turn.feedback is None and not outputs:
            continue
        tool_turn = turn.tool_call is not None
        messages.append(_feedback_message(turn.feedback or "", len(outputs),
                                          trace.protocol if tool_turn else "tags"))
        images += [source.image_file(sha) for sha in outputs]
    return messages, images


def build_sft_dataset(sources: list[TraceSource], system: str | Callable[[Trace], str], *, max_pixels: int):
    """The SFT dataset: `messages` plus lazily loaded `images` in placeholder order."""
    from datasets import Dataset

    from trainers.data import ImageCache

    if not sources:
        raise ValueError("no traces to train on")
    rows = []
    for source in sources:
        messages, images = conversation(source, system)
        rows.append({"messages": messages, "image_files": images, "trace_id": source.trace.id})
    cache = ImageCache(max_pixels)

    def with_images(batch: dict[str, list]) -> dict[str, list]:
        batch["images"] = [[cache.get(path) for path in paths] for paths in batch["image_files"]]
        return batch

    return Dataset.from_list(rows).with_transform(with_images)
