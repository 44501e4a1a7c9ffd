"""The agent runner's settings (`RunnerConfig`): a plain dataclass, light to import.

Kept apart from the runner (which imports the model backends) so that the
CLI, the UI forms and configs can read its fields and help texts without
loading torch.
"""

from dataclasses import dataclass

from workbench import protocol as proto
from workbench.fields import setting

# Upper bounds far above real use (the public demo's own limits are lower: workbench/ui/deployment.py).
MAX_SAMPLES, MAX_NEW_TOKENS, MAX_TOOL_WORKERS = 256, 32_768, 64


@dataclass
class RunnerConfig:
    """How episodes are rolled out."""

    tools: tuple[str, ...] = setting("Tools the model may call: any of code, search.", default=("code", "search"))
    protocol: str = setting("tags: <think>/<search>/<code> tags (paper); native: <tool_call> JSON (Qwen3-VL).",
                          default="tags")
    layout: str = setting("single_user: one growing user message (paper); chat: alternating messages.",
                        default="single_user")
    max_turns: int = setting("Most model turns per episode (the paper uses 5).", default=proto.MAX_TURNS)
    samples: int = setting("Samples per question (G); > 1 needs temperature > 0.", default=1)
    max_new_tokens: int = setting("Most tokens generated per turn.", default=512)
    temperature: float = setting("Sampling temperature; 0 is greedy.", default=0.0)
    top_p: float = setting("Nucleus sampling mass.", default=1.0)
    seed: int = setting("Seed for sampling, so runs can be repeated.", default=0)
    tool_workers: int = setting("Tool calls run at once.", default=4)
    retry_parse_errors: bool = setting("On a malformed turn, tell the model and let it try again "
                                     "(else the episode stops).", default=False)
    system_prompt: str | None = setting("Replace the built-in system prompt.", default=None)

    def __post_init__(self) -> None:
        self.tools = tuple(self.tools)
        unknown = [t for t in self.tools if t not in proto.TOOL_ARGUMENT]
        if unknown:
            raise ValueError(f"tools {unknown} are unknown; choose from {list(proto.TOOL_ARGUMENT)}")
        if self.protocol not in proto.PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is unknown; use one of {proto.PROTOCOLS}")
        if self.layout not in proto.LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is unknown; use one of {proto.LAYOUTS}")
        if not 1 <= self.max_turns <= 20:
            raise ValueError(f"max_turns={self.max_turns}; use 1..20 (the paper uses 5)")
        if self.samples < 1:
            raise ValueError(f"samples={self.samples}; use at least 1")
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError("samples > 1 with temperature 0 gives identical samples; set temperature > 0")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}; use at least 1")
        for name, limit in (("samples", MAX_SAMPLES), ("max_new_tokens", MAX_NEW_TOKENS),
                            ("tool_workers", MAX_TOOL_WORKERS)):
            if getattr(self, name) > limit:
                raise ValueError(f"{name}={getattr(self, name)} is over the limit of {limit}; use at most {limit}")
        if self.tool_workers < 1:
            raise ValueError(f"tool_workers={self.tool_workers}; use at least 1")

