"""Scoring: normalisation, F1/EM rules, aggregation, result-file validation, and conformance."""

import json

import pytest

from workbench.benchmarks.loaders import load_mat_coding
from workbench.benchmarks.scoring import (
    PredictionFileError,
    f1_em,
    load_predictions,
    normalize_answer,
    score_predictions,
)

# PROTOCOL.md reference figures for the two real result files.
REFERENCE_FIGURES = {
    "mat-coding_3b_visual-arft.json": ("mat-coding", {"simple_f1": 49.78, "simple_em": 40.00, "hard_f1": 28.42,
                                                      "hard_em": 13.08, "all_f1": 35.90, "all_em": 22.50}),
    "mat-search_3b_visual-arft.json": ("mat-search", {"all_f1": 53.70, "all_em": 46.00, "simple_f1": 59.64,
                                                      "simple_em": 54.67, "hard_f1": 47.75, "hard_em": 37.33}),
}


def write(tmp_path, content, name="preds.json"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


@pytest.mark.parametrize("filename", sorted(REFERENCE_FIGURES))
def test_reference_result_files_score_as_published(shared_reference, filename):
    benchmark, expected = REFERENCE_FIGURES[filename]
    report = score_predictions(load_predictions(shared_reference / "predictions" / filename), benchmark)
    summary = report.to_json()
    assert set(summary) == {"n", *expected}
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, abs=0.01), key
    assert report.warnings == []


def test_per_type_scores_use_benchmark_types(shared_reference):
    cases = load_mat_coding(shared_reference / "mat-coding-cases" / "coding_case.json")
    predictions = [p for p in load_predictions(shared_reference / "predictions" / "mat-coding_3b_visual-arft.json")
                   if str(p["id"]) in {c.id for c in cases}]
    report = score_predictions(predictions, "mat-coding", reference=cases)
    assert set(report.per_type) == {"rotation180", "dark", "none", "rotation90", "crop"}
    assert report.per_type["crop"].n == 2 and report.per_type["dark"].n == 2
    # id 124: 'Spaghetti GOEMON' vs 'Spaghetti\nGOEMON' is an exact match; id 119 shares no token.
    assert report.per_type["crop"].em == pytest.approx(50.0)
    assert report.per_type["none"].f1 == pytest.approx(100.0)
    splits = {s.id: s.split for s in report.per_item}
    assert splits[12] == "simple" and splits[71] == "hard"  # from the benchmark, not the position


def test_plain_normalisation():
    assert normalize_answer("  An Apple, the PIE; a tart!  ") == "apple pie tart"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("（北京）") == "（北京）"  # plain keeps full-width punctuation


def test_mat_coding_normalisation_and_cjk_tokens():
    assert normalize_answer("（北京） 市", "mat-coding") == "北京市"
    assert normalize_answer("The A\nB", "mat-coding") == "b"
    # Only the CJK string loses its spaces; its newlines stay, as in the published evaluator.
    assert normalize_answer("甲 乙\n丙", "mat-coding") == "甲乙\n丙"
    f1, em = f1_em("北京", ["北京市"], "mat-coding")
    assert (round(f1, 4), em) == (0.8, 0.0)
    # The plain normalisation never tokenises by character.
    assert f1_em("北京", ["北京市"], "multihop") == (0.0, 0.0)


def test_f1_counts_distinct_shared_tokens_and_em_forces_f1():
    f1, em = f1_em("paris paris", "paris")  # set overlap: precision 1/2, recall 1
    assert f1 == pytest.approx(2 / 3) and em == 0.0
    assert f1_em("Paris!", ["London", "paris"]) == (1.0, 1.0)
    assert f1_em(None, ["paris"]) == (0.0, 0.0)
    assert f1_em("", [""]) == (1.0, 1.0)  # an empty gold matches an empty answer exactly
    assert f1_em("x", [""]) == (0.0, 0.0)


def test_mat_splits_by_position_and_warning_for_partial_lists():
    items = [{"id": i, "gt": "a b", "pred_answer": "a b" if i < 70 else None} for i in range(80)]
    report = score_predictions(items, "mat-coding")
    assert report.simple_f1 == 100.0 and report.hard_f1 == 0.0
    assert report.all_em == pytest.approx(87.5)
    assert report.warnings and "200" in report.warnings[0]
    assert list(report.to_json()) == ["n", "all_f1", "all_em", "simple_f1", "simple_em", "hard_f1", "hard_em"]


def test_multihop_json_summary_has_only_overall_keys():
    report = score_predictions([{"id": "q1", "gt": ["1 2 3"], "pred_answer": "1 2"}], "multihop")
    assert report.to_json() == {"n": 1, "all_f1": 80.0, "all_em": 0.0}
    assert report.simple_f1 is None and report.per_type == {}
    assert json.loads(json.dumps(report.to_dict()))["per_item"][0]["id"] == "q1"


def test_unknown_benchmark_is_rejected():
    with pytest.raises(ValueError, match="unknown benchmark 'mat'"):
        score_predictions([], "mat")


def test_load_accepts_json_lines(tmp_path):
    path = write(tmp_path, '{"id": 1, "gt": "a", "pred_answer": "a"}\n\n{"id": 2, "gt": ["b"], "pred_answer": null}\n',
                 "preds.jsonl")
    assert [p["id"] for p in load_predictions(path)] == [1, 2]


@pytest.mark.parametrize("content, message", [
    ({"id": 1}, "expected a JSON list"),
    ([], "holds no predictions"),
    ([{"id": 1, "gt": "a", "pred_answer": "a"}, "oops"], "item 1: expected an object"),
    ([{"id": 7, "gt": "a"}], r"item 0 \(id 7\): missing field\(s\) pred_answer"),
    ([{"id": 7, "gt": 3, "pred_answer": "a"}], r"id 7\): 'gt' must be a string or a list"),
    ([{"id": 7, "gt": [], "pred_answer": "a"}], "'gt' is an empty list"),
    ([{"id": 7, "gt": ["a", 2], "pred_answer": "a"}], "'gt' must hold strings"),
    ([{"id": 7, "gt": "a", "pred_answer": 5}], "'pred_answer' must be a string or null"),
    ([{"id": 1.5, "gt": "a", "pred_answer": "a"}], "'id' must be a string or an integer"),
    ([{"id": 3, "gt": "a", "pred_answer": "a"}, {"id": 4, "gt": "b", "pred_answer": "b"},
      {"id": 3, "gt": "c", "pred_answer": "c"}], r"item 2 \(id 3\): duplicate id 3 \(first seen at item 0\)"),
    ('[{"id": 1, "gt": "a", "pred_answer": "a"},', "not valid JSON"),
])
def test_bad_prediction_files_name_the_item(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(PredictionFileError, match=message) as error:
        load_predictions(path)
    assert str(path) in str(error.value)


def test_non_utf8_file_names_the_item(tmp_path):
    good = json.dumps([{"id": "a", "gt": "x", "pred_answer": "fine"}, {"id": "b", "gt": "y", "pred_answer": "BAD"}])
    path = write(tmp_path, good.encode("utf-8").replace(b"BAD", b"caf\xe9"))
    with pytest.raises(PredictionFileError, match=r"item 1 \(id 'b'\): byte 0xe9 at offset \d+ is not valid UTF-8"):
        load_predictions(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PredictionFileError, match="cannot read"):
        load_predictions(tmp_path / "absent.json")


def test_result_files_as_released_load_without_ids_and_with_any_gold_key(tmp_path):
    """Bamboogle/MuSiQue-style items carry only {pred_answer, gt, query}; MAT items say answers/answer."""
    path = write(tmp_path, [{"pred_answer": "James Madison", "gt": ["james madison"], "query": "Who?"},
                            {"pred_answer": "Play well", "answer": "Play well.", "query": "Meaning?"},
                            {"id": "dev_2", "pred_answer": None, "answers": ["x", "y"], "split": "hard"}])
    items = load_predictions(path)
    assert items[0] == {"pred_answer": "James Madison", "gt": ["james madison"], "query": "Who?"}, "as written"
    report = score_predictions(items, "multihop")
    assert [s.id for s in report.per_item] == [0, 1, "dev_2"]
    assert report.to_json() == {"n": 3, "all_f1": 66.67, "all_em": 66.67}
    assert report.notes == ["2 of 3 items have no id; such an item is known by its 0-based position in the file"]


def test_positions_stand_in_for_ids_and_reference_types_by_position():
    cases = [type("Ref", (), {"id": 101, "split": "hard", "types": ["dark"]})(),
             type("Ref", (), {"id": 102, "split": "simple", "types": ["crop"]})()]
    report = score_predictions([{"gt": "a", "pred_answer": "a"}, {"gt": "b", "pred_answer": "c"}], "mat-coding",
                               reference=cases)
    assert [(s.split, s.types) for s in report.per_item] == [("hard", ["dark"]), ("simple", ["crop"])]
    with pytest.raises(PredictionFileError, match="item 1: has no id, and its position 1 is also the id of item 0"):
        score_predictions([{"id": 1, "gt": "a", "pred_answer": "a"}, {"gt": "b", "pred_answer": "b"}], "multihop")
    with pytest.raises(PredictionFileError, match=r"missing field\(s\) gt \(or answers / answer\)"):
        score_predictions([{"pred_answer": "b"}], "multihop")
