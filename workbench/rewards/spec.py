"""Weighted reward definitions: `RewardSpec`, the TRL reward it builds, and its stored description.

Two presets. `workbench` (default): the components of text.py and code.py,
stricter than the released code where the paper's text asks for it; the
default weights give the paper's sum, format 1 + a step accuracy (answer F1,
problem set, search-query similarity, or the constant 0.9 for code).
`paper`: the released reward code's own two functions, `format` and
`accuracy` (paper.py), value for value. The total reward of a completion is
the sum over the preset's components of weight x score, where a component
that does not apply to the step (None) adds 0. `describe(spec)` is the
exact, JSON-serialisable definition to store with every run;
`score_components` gives each component per completion for logging.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from workbench.benchmarks.scoring import BENCHMARKS
from workbench.fields import field_help, setting
from workbench.rewards import code as rewards_code
from workbench.rewards import paper as rewards_paper
from workbench.rewards import text as rewards_text

DESCRIPTION_VERSION = 2  # 2: presets (a description without "preset" is the workbench one)
PRESETS = ("workbench", "paper")
PAPER_COMPONENTS = ("format", "accuracy")


@dataclass
class RewardSpec:
    """Weights of the reward components and the options they use."""

    preset: str = setting("workbench: the workbench's step rewards (the weights below); paper: the released "
                          "reward code's format + accuracy, value for value (only the format and accuracy weights "
                          "apply).", "workbench")
    format: float = setting("<think> then exactly one well-formed action of the kind the step expects (1/0); any "
                            "repeated tag scores 0.", 1.0, component=True)
    answer_f1: float = setting("Token F1 of <answer> vs the gold answers (max over golds), answer steps.",
                               1.0, component=True)
    answer_em: float = setting("Exact match of <answer> with a gold answer after normalisation, answer steps.",
                               0.0, component=True)
    problem: float = setting("<problem> label set vs gold: 1 equal; 0.5 for naming only the rotation of a rotation+X "
                             "pair; else 0.", 1.0, component=True)
    search_similarity: float = setting("Cosine similarity (all-MiniLM-L6-v2) of <search> vs the reference query; "
                                       "below search_threshold counts 0.", 1.0, component=True)
    code_constant: float = setting("The paper's code reward: code_constant_value for any python code action on a "
                                   "code step.", 1.0, component=True)
    code_ran: float = setting("1 when the step's code ran without error (needs execution results).",
                              0.0, component=True)
    code_image: float = setting("1 when the step's code wrote a readable output image.", 0.0, component=True)
    code_restoration: float = setting("Share of the input->clean image gap the output closed (0..1), when a clean "
                                      "reference image exists.", 0.0, component=True)
    normalization: str = setting("Answer normalisation: mat-coding (also full-width punctuation and CJK characters) "
                                 "or multihop (plain).", "mat-coding")
    search_threshold: float = setting("Query similarity below this scores 0 (the paper uses 0.5).", 0.5)
    code_constant_value: float = setting("Value of the constant code reward (the paper uses 0.9).", 0.9)
    restoration_metric: str = setting("Image similarity for code_restoration: ssim or psnr.", "ssim")
    accuracy: float = setting("Paper preset: the released accuracy reward (answer F1 vs the solution, problem set, "
                              "math-verify then query similarity, 0.9 on code steps).", 1.0, component=True)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is unknown; use workbench or paper")
        changed = [f.name for f in fields(self) if f.name != "preset" and getattr(self, f.name) != f.default]
        if self.preset == "paper":
            foreign = [name for name in changed if name not in PAPER_COMPONENTS]
            if foreign:
                raise ValueError(f"{', '.join(foreign)} belong(s) to the workbench preset; the paper preset takes "
                                 f"only the weights format and accuracy")
        elif "accuracy" in changed:
            raise ValueError("accuracy is the paper preset's weight; set preset to paper, or weigh the workbench "
                             "components (answer_f1, problem, search_similarity, code_constant, ...)")
        for name, weight in self.weights().items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"weight {name}={weight!r} must be a finite number")
        if self.normalization not in BENCHMARKS:
            raise ValueError(f"normalization {self.normalization!r} is unknown; use mat-coding or multihop")
        if self.restoration_metric not in rewards_code.SIMILARITY_METRICS:
            raise ValueError(f"restoration_metric {self.restoration_metric!r} is unknown; use ssim or psnr")
        if not 0.0 <= self.search_threshold <= 1.0:
            raise ValueError(f"search_threshold={self.search_threshold}; use a value in 0..1")

    @classmethod
    def component_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.metadata.get("component")]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RewardSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown reward setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def weights(self) -> dict[str, float]:
        """The weight of each component of this preset."""
        names = PAPER_COMPONENTS if self.preset == "paper" else [n for n in self.component_names()
                                                                   if n != "accuracy"]
        return {name: getattr(self, name) for name in names}

    def executes_code(self) -> bool:
        """Whether a weighted component needs the step's code to be run."""
        return any(self.weights().get(name) for name in EXECUTION_COMPONENTS)


def _component_functions(spec: RewardSpec) -> dict[str, Callable[..., list]]:
    """Each component of the spec's preset as a TRL-style function with this spec's options bound."""
    if spec.preset == "paper":
        return {"format": rewards_paper.format_reward, "accuracy": rewards_paper.accuracy_reward}
    return {
        "format": rewards_text.format_reward,
        "answer_f1": functools.partial(rewards_text.answer_f1_reward, normalization=spec.normalization),
        "answer_em": functools.partial(rewards_text.answer_em_reward, normalization=spec.normalization),
        "problem": rewards_text.problem_reward,
        "search_similarity": functools.partial(rewards_text.search_similarity_reward,
                                               threshold=spec.search_threshold),
        "code_constant": functools.partial(rewards_code.code_constant_reward, value=spec.code_constant_value),
        "code_ran": rewards_code.code_ran_reward,
        "code_image": rewards_code.code_image_reward,
        "code_restoration": functools.partial(rewards_code.code_restoration_reward,
                                              metric=spec.restoration_metric),
    }


EXECUTION_COMPONENTS = ("code_ran", "code_image", "code_restoration")
APPLIES_TO = {"format": "every step", "answer_f1": "answer steps", "answer_em": "answer steps",
              "problem": "problem steps", "search_similarity": "search steps", "code_constant": "code steps",
              "code_ran": "code steps", "code_image": "code steps",
              "code_restoration": "code steps with a clean reference image"}
PAPER_APPLIES_TO = {"format": "every step (the kind of action its solution names; search rows: either kind)",
                    "accuracy": "every step (answer, problem, code or search rules, chosen by the solution)"}
PAPER_DEFINITIONS = {
    "format": "The released format reward: the whole completion is <think>..</think>, optional white space, then "
              "one action of the solution's kind (search rows: <search> or <answer>); a second <think> or action "
              "tag, or any text before or after, scores 0.",
    "accuracy": "The released accuracy reward: answer F1 (plain normalisation) against the solution's answer only, "
                "the whole completion when it has no <answer>; problem labels in single-quoted set syntax (0.5 "
                "for only the rotation of a rotation pair); 0.9 for any code-step completion without "
                "<answer>/<problem>; search rows first try math-verify, then answer F1 or all-MiniLM-L6-v2 query "
                "similarity (< 0.5 counts 0)."}


def score_components(spec: RewardSpec, completions: list, *, code_runner: Callable[[str, Path], Any] | None = None,
                     **kwargs: Any) -> dict[str, list[float | None]]:
    """Per-completion score of every weighted component (None = does not apply) and the weighted `total`.

    >>> parts = score_components(RewardSpec(), ["<think>t</think><answer>Paris</answer>"],
    ...                          type=["pre_answer"], gt=[["Paris"]])
    >>> parts["format"], parts["answer_f1"], parts["problem"], parts["total"]
    ([1.0], [1.0], [None], [2.0])
    """
    if code_runner is not None and "code_ok" not in kwargs and spec.executes_code():
        kwargs.update(rewards_code.run_code_steps(completions, code_runner, **kwargs))
    functions = _component_functions(spec)
    parts: dict[str, list[float | None]] = {}
    for name, weight in spec.weights().items():
        if weight:
            parts[name] = list(functions[name](completions, **kwargs))
    total = [0.0] * len(completions)
    for name, values in parts.items():
        weight = spec.weights()[name]
        total = [t + weight * v if v is not None else t for t, v in zip(total, values)]
    parts["total"] = total
    return parts


class CombinedReward:
    """A TRL reward function computing the weighted total; also logs each component's mean.

    A class instance (not a closure) so that it pickles for multi-process
    training; TRL names it by `__name__`.
    """

    def __init__(self, spec: RewardSpec, code_runner: Callable[[str, Path], Any] | None = None,
                 name: str = "visual_arft_reward"):
        self.spec = spec
        self.code_runner = code_runner
        self.__name__ = name

    def __call__(self, completions: list, **kwargs: Any) -> list[float]:
        parts = score_components(self.spec, completions, code_runner=self.code_runner, **kwargs)
        log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
        for component, values in parts.items():
            if component == "total":
                continue
            if callable(log_metric):
                applicable = [v for v in values if v is not None]
                if applicable:
                    log_metric(f"rewards/{self.__name__}/{component}/mean", sum(applicable) / len(applicable))
            if callable(log_extra):
                log_extra(f"{self.__name__}/{component}", values)
        return parts["total"]


def combined_reward(spec: RewardSpec | None = None,
                    code_runner: Callable[[str, Path], Any] | None = None) -> CombinedReward:
    """One TRL-compatible reward function for the whole spec.

    `code_runner(code, input_image) -> CodeRun | {"ok", "output_image"} | sandbox result`
    executes code steps when the dataset carries no `code_ok` column.

    >>> reward = combined_reward(RewardSpec(answer_f1=2.0))
    >>> reward(["<think>t</think><answer>Paris</answer>", "Paris"], type=["pre_answer"] * 2, gt=["Paris"] * 2)
    [3.0, 0.0]
    """
    return CombinedReward(spec or RewardSpec(), code_runner)


def reward_functions(spec: RewardSpec | None = None) -> tuple[list[Callable[..., list]], list[float]]:
    """The weighted components as separate TRL reward functions plus `reward_weights` for GRPOConfig.

    TRL then logs each under its own name; None (not applicable) becomes NaN
    and is skipped by TRL's weighted sum, matching `combined_reward`.
    """
    spec = spec or RewardSpec()
    functions = _component_functions(spec)
    chosen = [(functions[name], weight) for name, weight in spec.weights().items() if weight]
    return [f for f, _ in chosen], [w for _, w in chosen]


def describe(spec: RewardSpec | None = None) -> dict[str, Any]:
    """The exact reward definition and weights, JSON-serialisable, to store with a run.

    >>> import json
    >>> described = describe(RewardSpec(code_ran=0.5))
    >>> described["components"]["code_ran"]["weight"], json.loads(json.dumps(described)) == described
    (0.5, True)
    """
    spec = spec or RewardSpec()
    help_text = field_help(RewardSpec)
    if spec.preset == "paper":
        components = {name: {"weight": weight, "applies_to": PAPER_APPLIES_TO[name],
                             "definition": PAPER_DEFINITIONS[name]} for name, weight in spec.weights().items()}
        options: dict[str, Any] = {}
        step_kind = ("coding rows (a `kind` of code, or a `type` of pre_problem/pre_code/pre_answer) follow the "
                     "released coding script, every other row the released search script; the solution's action "
                     "tag chooses the rule")
    else:
        components = {name: {"weight": weight, "applies_to": APPLIES_TO[name], "definition": help_text[name]}
                      for name, weight in spec.weights().items()}
        options = {f.name: getattr(spec, f.name) for f in fields(spec)
                   if not f.metadata.get("component") and f.name != "preset"}
        step_kind = ("from the `type` column (pre_problem/pre_code/pre_answer/pre_search), else the first "
                     "action tag of `solution`; with neither, any action kind is accepted")
    return {
        "name": "visual_arft_reward",
        "version": DESCRIPTION_VERSION,
        "preset": spec.preset,
        "total": "sum over components of weight * score; a component that does not apply to a step adds 0",
        "step_kind": step_kind,
        "components": components,
        "options": {name: {"value": value, "definition": help_text[name]} for name, value in options.items()},
        "spec": asdict(spec),
    }


def preset_of(description: Any) -> str | None:
    """The preset a stored reward description names (None when it is not a training reward description).

    >>> preset_of(describe(RewardSpec(preset="paper"))), preset_of({"name": "visual_arft_reward", "version": 1})
    ('paper', 'workbench')
    >>> preset_of({"f1": "token F1"}) is None
    True
    """
    if not isinstance(description, dict) or description.get("name") != "visual_arft_reward":
        return None
    return description.get("preset") or "workbench"  # descriptions written before presets existed
