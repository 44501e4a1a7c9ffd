"""The Visual-ARFT rewards in one import: step rewards for TRL's GRPOTrainer and their weighting.

Implementation lives in four modules:
- text: format, answer F1/EM, problem set, search-query similarity;
- code: the paper's constant code reward and execution-based ones
  (ran, wrote an image, moved closer to the clean image);
- paper: the `paper` preset, the released reward code's format and accuracy
  values (where they differ from the paper's text, the code wins);
- spec: `RewardSpec` (preset, weights), `combined_reward`, `reward_functions`,
  `score_components`, `describe` (the definition stored with each run) and
  `preset_of` (which preset a stored definition names).

Example, the paper's setup as one TRL reward function:

>>> reward = combined_reward(RewardSpec())
>>> reward(["<think>dim and sideways</think><problem>{'rotation90', 'dark'}</problem>"],
...        type=["pre_problem"], solution=["<think>..</think><problem>{'dark', 'rotation90'}</problem>"])
[2.0]
"""

from workbench.rewards.code import (
    CodeRun,
    code_constant_reward,
    code_image_reward,
    code_ran_reward,
    code_restoration_reward,
    image_similarity,
    restoration_gain,
    run_code_steps,
)
from workbench.rewards.spec import (
    PRESETS,
    CombinedReward,
    RewardSpec,
    combined_reward,
    describe,
    preset_of,
    reward_functions,
    score_components,
)
from workbench.rewards.text import (
    SimilarityModelMissing,
    answer_em_reward,
    answer_f1_reward,
    completion_turns,
    expected_kinds,
    format_reward,
    load_similarity_model,
    problem_reward,
    problem_set_score,
    query_similarity,
    search_similarity_reward,
    turn_is_well_formed,
)

__all__ = [
    "PRESETS", "CodeRun", "CombinedReward", "RewardSpec", "SimilarityModelMissing",
    "answer_em_reward", "answer_f1_reward", "code_constant_reward", "code_image_reward", "code_ran_reward",
    "code_restoration_reward", "combined_reward", "completion_turns", "describe", "expected_kinds",
    "format_reward", "image_similarity", "load_similarity_model", "preset_of", "problem_reward", "problem_set_score",
    "query_similarity", "restoration_gain", "reward_functions", "run_code_steps", "score_components",
    "search_similarity_reward", "turn_is_well_formed",
]
