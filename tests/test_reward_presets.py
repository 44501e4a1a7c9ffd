"""Reward presets: `paper` gives the released reward code's values; `workbench` stays the default.

PAPER_CASES is the case table of PROTOCOL.md ("What the released reward
code does") plus cases like them, each with the values the released code
gives; EDGE_CASES pin down rules the table only implies (whole-string
format match, single-line tag bodies, repeated labels, rotation pairs).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.rewards import (
    RewardSpec,
    combined_reward,
    describe,
    paper,
    preset_of,
    reward_functions,
    score_components,
)
from workbench.rewards.rows import score_rows

ROOT = Path(__file__).resolve().parent.parent
T = "<think> t </think>\n"
ANSWER_81 = "<answer> 81 </answer>"
CODE_SOLUTION = "<code>\n```python\nx=1\n```\n</code>"
MILKMAID = "<search> Museum where The Milkmaid is housed </search>"

# (case, kind, type, solution, completion, paper format, paper accuracy)
PAPER_CASES = [
    ("answer exact", "code", "pre_answer", ANSWER_81, T + ANSWER_81, 1.0, 1.0),
    ("trailing newline", "code", "pre_answer", ANSWER_81, T + ANSWER_81 + "\n", 0.0, 1.0),
    ("no tags at all", "code", "pre_answer", ANSWER_81, "the answer is 81", 0.0, 0.5),
    ("CJK partial", "code", "pre_answer", "<answer> {'始发站': '广安枢纽站'} </answer>",
     T + "<answer> 广安枢纽站 </answer>", 1.0, 0.667),
    ("gt is the teacher turn", "code", "pre_answer", ANSWER_81, T + "<answer> ok </answer>", 1.0, 0.0),
    ("code step, no action", "code", "pre_code", CODE_SOLUTION, T + "I would rotate it.", 0.0, 0.9),
    ("code step, empty fence", "code", "pre_code", CODE_SOLUTION, T + "<code>\n```python\n```\n</code>", 1.0, 0.9),
    ("problem, double quotes", "code", "pre_problem", "<problem> {'dark'} </problem>",
     T + '<problem> {"dark"} </problem>', 0.0, 0.0),
    ("problem, unknown label", "code", "pre_problem", "<problem> {'dark'} </problem>",
     T + "<problem> {'dark', 'foggy'} </problem>", 1.0, 0.0),
    ("search good", "search", None, MILKMAID, T + "<search> Which museum houses The Milkmaid </search>", 1.0, 0.974),
    ("search, no tags", "search", None, MILKMAID, "Which museum houses The Milkmaid", 0.0, 0.974),
    ("search row, answers instead", "search", None, MILKMAID, T + "<answer> Rijksmuseum </answer>", 1.0, 0.0),
    ("full-width punctuation", "search", None, "<answer> Play well </answer>", T + "<answer> Play well！ </answer>",
     1.0, 0.5),
    ("two thinks", "code", "pre_answer", ANSWER_81, "<think>a</think><think>b</think><answer> 81 </answer>", 0.0, 1.0),
    # like them
    ("leading space", "code", "pre_answer", ANSWER_81, " " + T + ANSWER_81, 0.0, 1.0),
    ("answer on a code step", "code", "pre_code", CODE_SOLUTION, T + ANSWER_81, 0.0, 0.0),
    ("code on an answer step", "code", "pre_answer", ANSWER_81, T + CODE_SOLUTION, 0.0, 0.0),
    ("rotation pair, only the rotation", "code", "pre_problem", "<problem> {'rotation90', 'dark'} </problem>",
     T + "<problem> {'rotation90'} </problem>", 1.0, 0.5),
    ("rotation180 pair, only the rotation", "code", "pre_problem", "<problem> {'dark', 'rotation180'} </problem>",
     T + "<problem> {'rotation180'} </problem>", 1.0, 0.5),
    ("problem set in another order", "code", "pre_problem", "<problem> {'rotation90', 'dark'} </problem>",
     T + "<problem> {'dark', 'rotation90'} </problem>", 1.0, 1.0),
    ("search row, symbolic match", "search", None, "<answer> 1945 </answer>", T + "<answer> In 1945 </answer>",
     1.0, 1.0),
    ("search row, search instead of answer", "search", None, "<answer> Yes </answer>",
     T + "<search> is it the same museum </search>", 1.0, 0.0),
    ("search, unrelated query", "search", None, MILKMAID, T + "<search> banana bread recipe </search>", 1.0, 0.0),
    ("search, answer and search", "search", None, MILKMAID, T + "<search> a </search><answer> b </answer>",
     0.0, 0.0),
    ("no think", "code", "pre_answer", ANSWER_81, ANSWER_81, 0.0, 1.0),
    # the solution's answer spans lines, so its whole text is the gold: "answer 81 answer" vs "81"
    ("multi-line answer in the solution", "code", "pre_answer", "<answer>\n81\n</answer>", T + ANSWER_81, 1.0, 0.5),
]

EDGE_CASES = [
    # a multi-line answer is not read as a tag body: the whole completion is scored
    ("multi-line completion answer", "code", "pre_answer", ANSWER_81, T + "<answer>\n81 apples\n</answer>", 1.0, 0.25),
    ("text after the action", "code", "pre_code", CODE_SOLUTION, T + CODE_SOLUTION + " done", 0.0, 0.9),
    ("problem with repeated label", "code", "pre_problem", "<problem> {'dark'} </problem>",
     T + "<problem> {'dark', 'dark'} </problem>", 1.0, 0.0),
    ("empty problem set matches an empty gold", "code", "pre_problem", "<problem> {} </problem>",
     T + "<think>x", 0.0, 1.0),
    ("solution names no action", "code", "pre_answer", "81", T + ANSWER_81, 0.0, 0.0),
]


def _by_table(cases):
    return pytest.mark.parametrize("case, kind, step, solution, completion, fmt, acc", cases, ids=[c[0] for c in cases])


@_by_table(PAPER_CASES + EDGE_CASES)
def test_paper_preset_gives_the_released_values(case, kind, step, solution, completion, fmt, acc):
    columns = {"solution": [solution], "type": [step], "kind": [kind]}
    assert paper.format_reward([completion], **columns) == [fmt]
    assert paper.accuracy_reward([completion], **columns)[0] == pytest.approx(acc, abs=5e-4)


def test_gt_is_never_read_and_the_first_message_is_judged():
    """The released code reads `solution` only, and `completion[0]["content"]`."""
    messages = [{"role": "assistant", "content": T + "<answer> ok </answer>"}, {"role": "user", "content": "81"}]
    scores = paper.accuracy_reward([messages], solution=[ANSWER_81], gt=[["ok"]], type=["pre_answer"])
    assert scores == [0.0]


def test_rows_without_kind_follow_their_type():
    """Coding training rows have a type; search training rows have none."""
    rows = {"solution": [ANSWER_81] * 3, "type": ["pre_answer", None, "pre_search"]}
    assert paper.row_kinds(3, rows) == ["code", "search", "search"]
    with pytest.raises(ValueError, match="kind 'image' is unknown"):
        paper.row_kinds(1, {"kind": ["image"]})


def test_the_paper_spec_has_two_components_and_describes_itself():
    spec = RewardSpec(preset="paper")
    assert spec.weights() == {"format": 1.0, "accuracy": 1.0} and not spec.executes_code()
    functions, weights = reward_functions(spec)
    assert [f.__name__ for f in functions] == ["format_reward", "accuracy_reward"] and weights == [1.0, 1.0]
    described = json.loads(json.dumps(describe(spec)))
    assert described["preset"] == "paper" and set(described["components"]) == {"format", "accuracy"}
    assert RewardSpec.from_dict(described["spec"]) == spec
    assert preset_of(described) == "paper" and preset_of(describe()) == "workbench"
    reward = combined_reward(spec)
    assert reward([T + ANSWER_81 + "\n"], solution=[ANSWER_81], type=["pre_answer"]) == [1.0]


@pytest.mark.parametrize("settings, message", [
    ({"preset": "released"}, "preset 'released' is unknown"),
    ({"preset": "paper", "answer_f1": 2.0}, "answer_f1 belong"),
    ({"preset": "paper", "search_threshold": 0.7}, "search_threshold belong"),
    ({"accuracy": 2.0}, "accuracy is the paper preset's weight"),
])
def test_preset_settings_that_do_not_apply_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        RewardSpec.from_dict(settings)


def test_presets_differ_where_the_table_says():
    """The workbench preset stays the default and stricter: trailing space, code without code, gt."""
    completions = [T + ANSWER_81 + "\n", T + "I would rotate it.", T + "<answer> ok </answer>"]
    columns = {"solution": [ANSWER_81, CODE_SOLUTION, ANSWER_81], "type": ["pre_answer", "pre_code", "pre_answer"],
               "gt": [None, None, ["ok"]]}
    workbench = score_components(RewardSpec(), completions, **columns)["total"]
    released = score_components(RewardSpec(preset="paper"), completions, **columns)["total"]
    assert workbench == [2.0, 0.0, 2.0] and released == [1.0, 0.9, 1.0]


def test_score_rows_reports_format_accuracy_and_total():
    rows = [{"kind": "code", "type": "pre_code", "solution": CODE_SOLUTION, "completion": T + "I would rotate it."},
            {"kind": "search", "solution": "<answer> 1945 </answer>", "completion": T + "<answer> In 1945 </answer>"}]
    released, workbench = score_rows(rows, "paper"), score_rows(rows, "workbench")
    assert [(r["format"], r["accuracy"], r["total"]) for r in released] == [(0.0, 0.9, 0.9), (1.0, 1.0, 2.0)]
    assert workbench[0]["total"] == 0.0 and workbench[1]["components"]["answer_f1"] == pytest.approx(2 / 3)


def test_reward_command_prints_one_json_object_per_row(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"kind": kind, "type": step, "solution": solution, "completion": completion})
                              for _, kind, step, solution, completion, _, _ in PAPER_CASES[:9]) + "\n")
    done = subprocess.run([sys.executable, "-m", "workbench", "reward", "--preset", "paper", "--input", str(rows),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["format"] for line in lines] == [case[5] for case in PAPER_CASES[:9]]
    assert [round(line["accuracy"], 3) for line in lines] == [case[6] for case in PAPER_CASES[:9]]
    assert all(line["total"] == line["format"] + line["accuracy"] for line in lines)
