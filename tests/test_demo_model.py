"""The shipped demo model and demo assets: present, small, documented, and really using its tools."""

import json

import pytest

from workbench import settings
from workbench.backends import resolve_model
from workbench.store import Store
from workbench.synth import demo_assets
from workbench.ui.demo_runs import GRPO_RUN, TRACES_RUN, seed_demo_runs


@pytest.fixture(scope="module")
def demo_backend():
    return resolve_model("demo")


def _run(backend, benchmark: str):
    traces = demo_assets.run_demo_items(backend, benchmark, Store())
    return traces, [trace.rewards["f1"] for trace in traces]


def test_demo_model_is_shipped_small_and_its_card_matches_its_figures():
    folder = settings.demo_model_dir()
    shipped = [*folder.rglob("*"), *settings.DEMO_START_ADAPTER.rglob("*")]  # the weight budget holds both
    assert sum(p.stat().st_size for p in shipped if p.is_file()) <= 25 * 1024 ** 2
    figures = json.loads((folder / "figures.json").read_text())
    results = figures["results"]
    card = (folder / "README.md").read_text()
    assert "## How it was made" in card and "## What it cannot do" in card
    assert figures["stages"] and all(f"{stage['name']}: {stage['steps']} steps" in card for stage in figures["stages"])
    for benchmark in ("mat-coding", "mat-search"):
        with_tools = results["demo model, with tools"][benchmark]["f1"]
        assert with_tools > results["demo model, without tools"][benchmark]["f1"], f"tools must help on {benchmark}"
        assert with_tools > results["untrained tiny model, with tools"][benchmark]["f1"]
        assert f"| {with_tools:.1f} / " in card
    assert figures["grpo"]["minutes"] <= 10 and len(figures["grpo"]["eval_reward"]) >= 2
    facts = figures["grpo"]["config"]  # the card states the run's own evaluation size
    assert f"{facts['num_generations_eval']} samples on each of {facts['eval_items']} held-out items" in card
    # click-to-train: LoRA from the start adapter, its held-out curves in the card as the run logged them
    assert facts["finetune"] == "lora" and facts["init_adapter"] and figures["start_adapter"]["run"] in card
    for key in ("eval_answer_f1", "eval_call_rate_degraded"):
        points = figures["grpo"][key]
        assert points[-1][1] > points[0][1] and f"step {points[-1][0]}: {points[-1][1]:.2f}" in card


def test_demo_model_names_the_problem_runs_code_and_answers_on_the_demo_items(demo_backend):
    traces, f1s = _run(demo_backend, "mat-coding")
    assert sum(t.stop_reason == "answered" for t in traces) >= len(traces) - 1
    assert all(t.turns[0].action == "problem" for t in traces)
    calls = [turn.tool_call for t in traces for turn in t.turns if turn.tool_call]
    assert len(calls) >= len(traces) - 2 and all(call.ok and call.output_images for call in calls)
    assert sum(f1s) >= len(traces) / 2, f"F1 per item: {f1s}"


def test_demo_model_searches_for_the_emblem_it_sees_and_answers(demo_backend):
    # Its queries are sensible; the answers it copies out of the results are right only some of the time
    # (held-out F1 in the model card), so no single demo item is required to be right.
    from workbench.benchmarks.mat_search_mini import COLOURS, SHAPES

    traces, _ = _run(demo_backend, "mat-search")
    for trace in traces:
        query = trace.turns[0].argument
        assert trace.turns[0].action == "search" and "emblem" in query
        assert any(c in query for c in COLOURS) and any(s in query for s in SHAPES), query
        assert "<information> 1. Content:" in trace.turns[0].feedback
        assert trace.stop_reason == "answered" and trace.final_answer


def test_a_fresh_workbench_gets_the_demo_models_traces_and_the_grpo_run():
    store = Store()
    assert seed_demo_runs(store) == [TRACES_RUN, GRPO_RUN]
    assert seed_demo_runs(store) == [TRACES_RUN, GRPO_RUN], "imported once"
    traces = [store.get_trace(row["id"]) for row in store.list_traces(run_id=TRACES_RUN, limit=100)]
    assert len(traces) == len(demo_assets.CODING_KINDS) + len(demo_assets.SEARCH_KINDS)
    assert {t.model_id for t in traces} == {settings.DEMO_MODEL_ID}
    held_out = [row["value"] for row in store.metrics_since(GRPO_RUN, names=["eval_reward"])]
    assert len(held_out) >= 2 and store.get_run(GRPO_RUN)["config"]["demo"] is True
    groups = {row["group_id"] for row in store.list_traces(run_id=GRPO_RUN, limit=1000)}
    assert groups, "the GRPO run ships its sampled rollout groups"
