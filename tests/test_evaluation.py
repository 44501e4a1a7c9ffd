"""Evaluation runs: stored traces with F1/EM, resume after interruption, no half-finished runs, imports."""

import json

import pytest
from PIL import Image

from workbench import cli
from workbench.agent.runner import RunnerConfig
from workbench.backends.replay import ReplayBackend
from workbench.benchmarks.evaluation import EvalConfig, import_predictions, run_evaluation
from workbench.store import Store


def write_benchmark(folder, n=5):
    items = []
    for index in range(n):
        Image.new("RGB", (40, 40), (index * 40, 0, 0)).save(folder / f"p{index}.png")
        Image.new("RGB", (40, 40), (index * 40, 9, 9)).save(folder / f"o{index}.png")
        items.append({"id": index, "question": f"What is item {index}?", "answers": [f"thing {index}"],
                      "ori_image_path": f"o{index}.png", "processed_image_path": f"p{index}.png",
                      "type": ["dark"] if index % 2 else ["none"]})
    path = folder / "bench.json"
    path.write_text(json.dumps(items))
    return path, items


def answer_backend(items, wrong=()):
    turns = {}
    for item in items:
        answer = "nope" if item["id"] in wrong else item["answers"][0]
        turns[item["question"]] = [f"<think>easy</think><answer>{answer}</answer>"]
    return ReplayBackend(turns)


def test_eval_scores_and_stores_every_item(tmp_path):
    path, items = write_benchmark(tmp_path)
    store = Store()
    backend = answer_backend(items, wrong={1})
    run_id = run_evaluation(store, EvalConfig(benchmark="mat-coding", data=str(path)), RunnerConfig(tools=()),
                            backend=backend, tools={})
    run = store.get_run(run_id)
    assert run["status"] == "succeeded" and run["kind"] == "eval"
    assert run["summary"]["n"] == 5 and run["summary"]["all_em"] == 80.0
    assert run["summary"]["per_type"]["dark"]["n"] == 2
    traces = store.list_traces(run_id=run_id)
    assert {t["item_id"]: t["rewards"]["em"] for t in traces}["1"] == 0.0


def test_interrupted_eval_is_not_finished_and_resumes_only_missing_items(tmp_path):
    path, items = write_benchmark(tmp_path)
    store = Store()
    config = EvalConfig(benchmark="mat-coding", data=str(path), batch_items=2)

    def interrupt(done, total):
        raise KeyboardInterrupt

    backend = answer_backend(items)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(store, config, RunnerConfig(tools=()), backend=backend, tools={},
                       run_id="resume-me", on_progress=interrupt)
    assert store.get_run("resume-me")["status"] == "running"
    assert store.count_traces("resume-me") == 2
    backend = answer_backend(items)
    run_evaluation(store, config, RunnerConfig(tools=()), backend=backend, tools={}, run_id="resume-me")
    assert backend.calls == 2  # three remaining items in batches of two
    assert store.count_traces("resume-me") == 5
    assert store.get_run("resume-me")["summary"]["all_em"] == 100.0


def test_bad_benchmark_file_creates_no_run(tmp_path):
    path, items = write_benchmark(tmp_path)
    (tmp_path / "p3.png").unlink()
    store = Store()
    with pytest.raises(ValueError, match="3"):
        run_evaluation(store, EvalConfig(benchmark="mat-coding", data=str(path)), RunnerConfig(tools=()),
                       backend=answer_backend(items), tools={})
    assert store.list_runs() == []


@pytest.mark.parametrize("kwargs, message", [
    ({"benchmark": "vqa", "data": "x"}, "unknown"),
    ({"benchmark": "mat-coding", "data": ""}, "no benchmark file"),
    ({"benchmark": "mat-coding", "data": "/nonexistent.json"}, "does not exist"),
])
def test_eval_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(**kwargs)


def test_real_mat_coding_cases_evaluate(shared_reference):
    cases = shared_reference / "mat-coding-cases" / "coding_case.json"
    items = json.loads(cases.read_text())
    store = Store()
    run_id = run_evaluation(store, EvalConfig(benchmark="mat-coding", data=str(cases)), RunnerConfig(tools=()),
                            backend=answer_backend(items), tools={})
    assert store.get_run(run_id)["summary"]["all_f1"] == 100.0


def test_score_cli_matches_the_protocol_figures_and_imports(shared_reference, capsys):
    predictions = shared_reference / "predictions" / "mat-coding_3b_visual-arft.json"
    assert cli.main(["score", "--benchmark", "mat-coding", "--predictions", str(predictions), "--json",
                     "--import", "paper-3b"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"n": 200, "all_f1": 35.9, "all_em": 22.5, "simple_f1": 49.78, "simple_em": 40.0,
                       "hard_f1": 28.42, "hard_em": 13.08}
    (run,) = Store().list_runs(kind="imported")
    assert run["name"] == "paper-3b" and run["summary"]["hard_em"] == 13.08
    assert Store().count_traces(run["id"]) == 200


def test_import_predictions_refuses_duplicate_ids(tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps([{"id": 1, "gt": ["a"], "pred_answer": "a"},
                                {"id": 1, "gt": ["b"], "pred_answer": "b"}]))
    with pytest.raises(ValueError, match="1"):
        import_predictions(Store(), path, "multihop", "dup")
    assert Store().list_runs() == []
