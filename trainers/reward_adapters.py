"""Plumbing between TRL's reward calls and the workbench rewards (workbench.rewards); no reward maths here.

Each weighted component of a `RewardSpec` becomes one TRL reward function
named after the component, so TRL logs `rewards/<component>/mean` and the
trainer's per-sample table keeps every component apart (the logging callback
stores them on traces). The adapter only reshapes inputs:

- completions parsed by the tag response template come back to the rewards
  as the raw turn text (`<think>..</think><code>..</code>`);
- in episodes mode, execution results come from the rollout's environment
  (`code_ok`, `output_image`, the input and clean images), and the step kind
  each component judges is `workbench.rewards.episode.episode_columns`'s (the
  same rule that scores a finished Playground episode);
- in steps mode with execution-based code rewards, the code of each code
  step is run once per batch in the sandbox (`run_code_steps`).
"""

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainers.chat_format import assistant_turn_text
from workbench import rewards, settings
from workbench.rewards.episode import episode_columns
from workbench.rewards.spec import EXECUTION_COMPONENTS


def completion_messages(completion: Any, protocol_name: str) -> Any:
    """A TRL completion with tag tool calls turned back into literal text (other shapes pass through)."""
    if protocol_name != "tags" or not isinstance(completion, list):
        return completion
    return [{**m, "content": assistant_turn_text(m, "tags"), "tool_calls": None} if m.get("role") == "assistant"
            else m for m in completion]


class SandboxCodeRunner:
    """Runs a code step's code in the sandbox (steps mode); a batch's outputs are removed at the next batch."""

    def __init__(self):
        from tools.code_sandbox import CodeSandbox

        self.sandbox = CodeSandbox()
        self._folders: list[Path] = []

    def start_batch(self) -> None:
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._folders = []

    def __call__(self, code: str, input_image: Path) -> Any:
        folder = Path(tempfile.mkdtemp(prefix="reward-code-", dir=settings.scratch_dir()))
        self._folders.append(folder)
        return self.sandbox.run(code, input_image, job_dir=folder)

    def close(self) -> None:
        self.start_batch()
        self.sandbox.close()


class CodeExecutionCache:
    """Runs a batch's code steps once, for all execution-based components (steps mode)."""

    def __init__(self, runner: Callable[[str, Path], Any]):
        self.runner = runner
        self._key: int | None = None
        self._columns: dict[str, list] = {}

    def columns(self, completions: list, kwargs: dict) -> dict[str, list]:
        if self._key != id(completions):
            start_batch = getattr(self.runner, "start_batch", None)
            if start_batch is not None:
                start_batch()
            self._columns = rewards.run_code_steps(completions, self.runner, **kwargs)
            self._key = id(completions)
        return self._columns


class ComponentReward:
    """One reward component as a TRL reward function (`__name__` = component name)."""

    def __init__(self, name: str, function: Callable[..., list], *, mode: str, protocol_name: str,
                 execution: CodeExecutionCache | None = None, on_batch: Callable[[dict], None] | None = None):
        self.__name__ = name
        self.function = function
        self.mode = mode
        self.protocol_name = protocol_name
        self.execution = execution
        self.on_batch = on_batch

    def __call__(self, completions: list, environments: list | None = None, **kwargs: Any) -> list[float | None]:
        if self.on_batch is not None:
            self.on_batch(kwargs)
        texts = [completion_messages(c, self.protocol_name) for c in completions]
        if self.mode == "episodes":
            kwargs = self._episode_columns(len(texts), environments, kwargs)
        elif self.execution is not None and self.__name__ in EXECUTION_COMPONENTS:
            kwargs = {**kwargs, **self.execution.columns(texts, kwargs)}
        return self.function(texts, **kwargs)

    def _episode_columns(self, n: int, environments: list | None, kwargs: dict) -> dict:
        columns = episode_columns(self.__name__, n, kwargs)
        if environments:
            columns["code_ok"] = [env.code_ok for env in environments]
            columns["output_image"] = [env.last_output_image for env in environments]
        return columns


def component_rewards(spec: rewards.RewardSpec, *, mode: str, protocol_name: str,
                      code_runner: Callable[[str, Path], Any] | None = None,
                      on_batch: Callable[[dict], None] | None = None) -> tuple[list[ComponentReward], list[float]]:
    """The spec's weighted components as TRL reward functions, and their `reward_weights`.

    `on_batch(kwargs)` is called once per batch with the dataset columns (the first component calls it).
    """
    functions, weights = rewards.reward_functions(spec)
    names = [name for name, weight in spec.weights().items() if weight]  # reward_functions keeps this order
    needs_execution = spec.executes_code()
    if mode == "steps" and needs_execution and code_runner is None:
        raise ValueError("execution-based code rewards (code_ran, code_image, code_restoration) need a code runner "
                         "in steps mode; set their weights to 0 or train in episodes mode")
    execution = CodeExecutionCache(code_runner) if mode == "steps" and needs_execution else None
    reward_funcs = [ComponentReward(name, function, mode=mode, protocol_name=protocol_name, execution=execution,
                                    on_batch=on_batch if position == 0 else None)
                    for position, (name, function) in enumerate(zip(names, functions, strict=True))]
    return reward_funcs, weights
