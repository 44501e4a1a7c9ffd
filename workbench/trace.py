"""The one trace shape: an episode as chat messages plus structured turns and metadata.

Playground runs, evaluation, training rollouts, imported logs and test
fixtures all produce `Trace` objects. Images are never embedded: they are
referenced by the SHA-256 of a file in the content-addressed image store
(`workbench.images`), written as "sha256:<hex>" inside chat messages.
"""

import json
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

IMAGE_REF_PREFIX = "sha256:"


def image_ref(sha: str) -> str:
    return IMAGE_REF_PREFIX + sha


def ref_sha(ref: str) -> str | None:
    """The SHA inside an image reference, or None if it is not one."""
    return ref[len(IMAGE_REF_PREFIX):] if isinstance(ref, str) and ref.startswith(IMAGE_REF_PREFIX) else None


@dataclass
class ToolCall:
    """One tool execution requested by a model turn, and what came back: the one shape of a tool result.

    `output_text` is exactly what the model is shown next. `output_files` are the
    image files the tool wrote, in this process (not stored); once a trace is
    stored they are `output_images`, SHA-256s in the image store.
    """

    name: str
    argument: str
    output_text: str = ""
    output_images: list[str] = field(default_factory=list)
    ok: bool = True
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    latency_s: float = 0.0
    output_files: list[str] = field(default_factory=list, compare=False, repr=False)


@dataclass
class Turn:
    """One model turn: raw text, its parse, the image it saw and the tool call it made."""

    index: int
    raw: str
    think: str | None = None
    action: str | None = None
    argument: str | None = None
    parse_error: str | None = None
    image: str | None = None
    tool_call: ToolCall | None = None
    feedback: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


@dataclass
class Trace:
    """One episode: a question about image(s), every turn, the answer and its rewards."""

    question: str
    images: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    final_answer: str | None = None
    stop_reason: str | None = None
    gold: list[str] = field(default_factory=list)
    rewards: dict[str, float] = field(default_factory=dict)
    model_id: str = ""
    adapter: str | None = None
    protocol: str = "tags"
    layout: str = "single_user"
    run_id: str | None = None
    item_id: str | None = None
    group_id: str | None = None
    sample_index: int = 0
    step: int | None = None
    advantage: float | None = None
    duration_s: float = 0.0
    created_at: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def prompt_tokens(self) -> int:
        return sum(turn.prompt_tokens for turn in self.turns)

    @property
    def completion_tokens(self) -> int:
        return sum(turn.completion_tokens for turn in self.turns)

    @property
    def reward_total(self) -> float | None:
        return self.rewards.get("total") if self.rewards else None

    def image_shas(self) -> set[str]:
        """Every image this trace refers to (inputs, turn views, tool outputs)."""
        shas = set(self.images)
        for turn in self.turns:
            if turn.image:
                shas.add(turn.image)
            if turn.tool_call:
                shas.update(turn.tool_call.output_images)
        return shas

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for turn in data["turns"]:
            if turn["tool_call"]:
                turn["tool_call"].pop("output_files")  # where this process's tool wrote them: not part of the trace
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trace":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"trace has unknown fields {sorted(unknown)}; expected a subset of {sorted(known)}")
        if not isinstance(data.get("question"), str):
            raise ValueError("trace needs a 'question' string")
        values = dict(data)
        values["turns"] = [_turn_from_dict(t) for t in data.get("turns") or []]
        return cls(**values)


def _turn_from_dict(data: dict[str, Any]) -> Turn:
    values = dict(data)
    if values.get("tool_call"):
        values["tool_call"] = ToolCall(**values["tool_call"])
    return Turn(**values)
