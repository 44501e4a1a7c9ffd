"""Rewards of one whole multi-turn episode: which turn each component judges, the same in training and after.

In episodes mode (multi-turn tool RL) a reward function sees the whole
episode. `episode_columns` sets, per component, the step kind the reward
functions judge it as: format and answer components judge the final turn as
an answer; problem, search and code components judge whichever turn did that
-- except that code components do not apply to an item whose gold problem is
`none` (the paper's trajectory there is problem -> answer, no code step;
otherwise any code earns the constant code reward, and GRPO learned to write
code on clean images). Training (`trainers.reward_adapters`) and the scoring
of a finished trace (`score_episode`: the Playground's demo items, anything
with gold answers) both go through it, so a Playground episode shows the
reward GRPO would have given it.
"""

from typing import Any

from workbench.rewards.spec import EXECUTION_COMPONENTS, RewardSpec, reward_functions

FINAL_ANSWER_COMPONENTS = ("format", "answer_f1", "answer_em")
CODE_COMPONENTS = ("code_constant", *EXECUTION_COMPONENTS)
NO_CODE_STEP = "pre_answer"  # a step kind that code components do not judge


def episode_columns(component: str, n: int, columns: dict[str, Any]) -> dict[str, Any]:
    """The dataset columns of `n` episodes as `component`'s reward function should see them.

    >>> episode_columns("answer_f1", 1, {"gt": [["up"]]})["type"]
    ['pre_answer']
    >>> episode_columns("code_constant", 2, {"problem_labels": [["none"], ["dark"]]})["type"]
    ['pre_answer', None]
    """
    columns = dict(columns)
    columns["type"] = ["pre_answer" if component in FINAL_ANSWER_COMPONENTS else None] * n
    if component in CODE_COMPONENTS:
        labels = columns.get("problem_labels") or [None] * n
        columns["type"] = [NO_CODE_STEP if row and set(row) == {"none"} else None for row in labels]
    return columns


def score_episode(completion: list[dict[str, Any]], *, spec: RewardSpec | None = None, gold: list[str],
                  problem_labels: list[str] | None = None, code_ok: bool | None = None,
                  output_image: str | None = None) -> dict[str, float]:
    """Every weighted component of one finished episode (the model's messages after the prompt) and `total`.

    Components that do not apply (e.g. `problem` when the model never named a
    problem and none was expected) are left out; `total` is the weighted sum
    of the rest, as TRL sums them.

    >>> episode = [{"role": "assistant", "content": "<think>dark</think><problem>{'dark'}</problem>"},
    ...            {"role": "user", "content": "<tips> fix it </tips>"},
    ...            {"role": "assistant", "content": "<think>it says up</think><answer>up</answer>"}]
    >>> score_episode(episode, gold=["up"], problem_labels=["dark"])
    {'format': 1.0, 'answer_f1': 1.0, 'problem': 1.0, 'total': 3.0}
    """
    spec = spec or RewardSpec()
    columns = {"gt": [list(gold)], "problem_labels": [list(problem_labels) if problem_labels else None],
               "code_ok": [code_ok], "output_image": [output_image]}
    names = [name for name, weight in spec.weights().items() if weight]
    functions, weights = reward_functions(spec)
    scores: dict[str, float] = {}
    total = 0.0
    for name, function, weight in zip(names, functions, weights, strict=True):
        value = function([completion], **episode_columns(name, 1, columns))[0]
        if value is not None:
            scores[name] = float(value)
            total += weight * float(value)
    scores["total"] = total
    return scores
