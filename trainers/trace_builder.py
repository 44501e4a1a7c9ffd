"""Turning one GRPO rollout (TRL's prompt and completion messages) into a workbench `Trace`.

A `RolloutSnapshot` holds references to what the trainer already logged for
one sample: the prompt and completion messages (images as PIL objects), the
reward of each component, the advantage, and, in episodes, the environment's
tool-call records. `build_trace` (run on the logging writer thread) parses
each assistant turn with the workbench protocol, attaches the tool calls and
their output images (stored in the content-addressed image store), and fills
rewards (components + weighted `total`), group id, sample index, advantage
and step, so the Traces tab shows training rollouts like any other episode.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

from trainers.chat_format import assistant_turn_text
from workbench import protocol
from workbench.store import Store
from workbench.trace import ToolCall, Trace, Turn, image_ref

_QUERY = re.compile(r"<query>\s*(.*?)\s*</query>", re.S)


@dataclass
class RolloutSnapshot:
    """What the trainer logged for one sampled rollout (references, not copies)."""

    prompt: list[dict[str, Any]]
    completion: Any
    rewards: dict[str, float]
    advantage: float | None
    step: int
    group: int
    sample_index: int
    item_id: Any = None
    gold: Any = None
    step_type: str | None = None
    solution: str | None = None
    tool_records: list | None = None


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _text(content: Any) -> str:
    return "".join(b.get("text") or "" for b in _blocks(content) if b.get("type") == "text")


def _images(content: Any) -> list[Any]:
    return [b["image"] for b in _blocks(content) if b.get("type") == "image" and b.get("image") is not None]


def _stored_messages(store: Store, messages: list[dict[str, Any]], shas: dict[int, str],
                     protocol_name: str) -> list[dict[str, Any]]:
    """Messages with images swapped for "sha256:" references (stored once per image object)."""
    stored = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            blocks = []
            for block in _blocks(content):
                if block.get("type") == "image" and block.get("image") is not None:
                    image = block["image"]
                    if id(image) not in shas:
                        shas[id(image)] = store.put_image(image)
                    blocks.append({"type": "image", "image": image_ref(shas[id(image)])})
                else:
                    blocks.append({"type": block.get("type", "text"), "text": block.get("text") or ""})
            content = blocks
        if message.get("role") == "assistant":
            content = assistant_turn_text(message, protocol_name)
        stored.append({"role": message.get("role"), "content": content})
    return stored


def _stop_reason(turns: list[Turn], max_turns: int) -> str:
    if not turns:
        return "length"
    last = turns[-1]
    if last.action == "answer":
        return "answered"
    if last.parse_error:
        return "length" if "never closed" in last.parse_error else "parse_error"
    if last.tool_call is not None and not last.tool_call.ok:
        return "tool_error"
    if len(turns) >= max_turns:
        return "max_turns"
    # An action whose result never came back: TRL drops a tool result that would overflow max_completion_length.
    return "length" if last.feedback is None else "max_turns"


def build_trace(store: Store, snapshot: RolloutSnapshot, *, run_id: str, weights: dict[str, float],
                protocol_name: str, mode: str, model_id: str = "", max_turns: int = protocol.MAX_TURNS) -> Trace:
    """The Trace of one rollout; stores its images in the store's image folder."""
    shas: dict[int, str] = {}
    prompt_images = [image for message in snapshot.prompt for image in _images(message.get("content"))]
    input_shas = []
    for image in prompt_images:
        shas[id(image)] = store.put_image(image)
        input_shas.append(shas[id(image)])
    user_text = "\n".join(_text(m.get("content")) for m in snapshot.prompt if m.get("role") == "user")
    found = _QUERY.search(user_text)
    question = found.group(1) if found else user_text

    completion = snapshot.completion if isinstance(snapshot.completion, list) else [
        {"role": "assistant", "content": str(snapshot.completion)}]
    records = list(snapshot.tool_records or [])
    turns: list[Turn] = []
    for message in completion:
        if message.get("role") == "assistant":
            raw = assistant_turn_text(message, protocol_name)
            parsed = protocol.parse_turn(raw, protocol_name)
            turns.append(Turn(index=len(turns), raw=raw, think=parsed.think, action=parsed.action,
                              argument=parsed.argument, parse_error=parsed.error,
                              image=input_shas[0] if input_shas else None))
        elif message.get("role") == "tool" and turns:
            turn = turns[-1]
            text = _text(message.get("content"))
            turn.feedback = (turn.feedback or "") + text
            output_shas = []
            for image in _images(message.get("content")):
                if id(image) not in shas:
                    shas[id(image)] = store.put_image(image)
                output_shas.append(shas[id(image)])
            record = records.pop(0) if records else None
            name = record.name if record is not None else (message.get("name") or turn.action or "")
            if name in ("code", "search"):
                turn.tool_call = ToolCall(
                    name=name, argument=record.argument if record else (turn.argument or ""), output_text=text,
                    output_images=output_shas, ok=record.ok if record else True,
                    error=record.error if record else None, stdout=record.stdout if record else "",
                    stderr=record.stderr if record else "", latency_s=record.latency_s if record else 0.0)
    rewards = {name: float(value) for name, value in snapshot.rewards.items() if not math.isnan(value)}
    rewards["total"] = sum(weights.get(name, 0.0) * value for name, value in rewards.items())
    answers = [t.argument for t in turns if t.action == "answer"]
    gold = snapshot.gold if isinstance(snapshot.gold, list) else ([snapshot.gold] if snapshot.gold else [])
    item = str(snapshot.item_id) if snapshot.item_id is not None else f"group{snapshot.group}"
    metadata = {"source": "grpo-rollout", "mode": mode}
    if snapshot.step_type:
        metadata["step_type"] = snapshot.step_type
    if snapshot.solution:
        metadata["solution"] = snapshot.solution
    return Trace(
        question=question, images=input_shas, turns=turns,
        messages=_stored_messages(store, list(snapshot.prompt) + completion, shas, protocol_name),
        final_answer=answers[-1] if answers else None, stop_reason=_stop_reason(turns, max_turns),
        gold=[str(g) for g in gold], rewards=rewards, model_id=model_id, protocol=protocol_name, layout="chat",
        run_id=run_id, item_id=item, group_id=f"{run_id}:step{snapshot.step}:{item}",
        sample_index=snapshot.sample_index, step=snapshot.step,
        advantage=float(snapshot.advantage) if snapshot.advantage is not None else None,
        metadata=metadata)
