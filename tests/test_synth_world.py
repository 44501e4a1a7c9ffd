"""The offline demo world: seeded generators, expert repairs that really repair, correct expert traces."""

import json
import random

import numpy as np
import pytest
from PIL import Image

from workbench import protocol
from workbench.benchmarks import mat_coding_mini, mat_search_mini, mini_expert
from workbench.benchmarks.loaders import load_benchmark
from workbench.store import Store
from workbench.synth.demo_world import build_world, record_expert_traces


def _model_view(image: Image.Image) -> np.ndarray:
    """Roughly what the tiny model sees: the image at 112 x 112."""
    return np.asarray(image.convert("RGB").resize((112, 112)), dtype=np.float32)


def test_coding_generator_is_seeded_and_loads_as_mat_coding(tmp_path):
    first = mat_coding_mini.generate(tmp_path / "a", count=30, seed=5)
    second = mat_coding_mini.generate(tmp_path / "b", count=30, seed=5)
    assert first.read_text() == second.read_text()
    records = json.loads(first.read_text())
    assert all((tmp_path / "a" / r["processed_image_path"]).read_bytes()
               == (tmp_path / "b" / r["processed_image_path"]).read_bytes() for r in records)
    items = load_benchmark("mat-coding", first)
    assert len(items) == 30 and {i.split for i in items} == {"simple", "hard"}
    kinds = {r["question"] for r in records}
    assert any("within the [" in q for q in kinds) and mat_coding_mini.QUESTIONS["arrow"] in kinds
    for item in items:
        if item.types == ["crop"]:
            assert protocol.find_box(item.question) is not None


@pytest.mark.parametrize("labels", [["rotation90"], ["rotation180"], ["dark"], ["overexposure"], ["noise"],
                                    ["rotation90", "dark"], ["noise", "overexposure"], ["blur", "dark"]])
def test_expert_code_undoes_the_degradation_in_the_real_sandbox(labels, tmp_path):
    from tools.code_sandbox import run_code

    rng, noise = random.Random(1), np.random.default_rng(1)
    clean = mat_coding_mini.render_card("arrow", "left", "green", rng)
    degraded = clean
    for label in labels:
        degraded = mat_coding_mini.degrade(degraded, label, noise)
    degraded.save(tmp_path / "in.png")
    result = run_code(mini_expert.repair_code(labels), tmp_path / "in.png")
    assert result.ok, result.error
    before = np.abs(_model_view(degraded) - _model_view(clean)).mean()
    after = np.abs(_model_view(Image.open(result.output_images[0])) - _model_view(clean)).mean()
    assert after < before / 2, (before, after)


def test_expert_crop_code_shows_the_asked_shape(tmp_path):
    from tools.code_sandbox import run_code

    folder = tmp_path / "mini"
    records = json.loads(mat_coding_mini.generate(folder, count=40, seed=2).read_text())
    crops = [r for r in records if r["type"] == ["crop"]][:3]
    assert crops
    for record in crops:
        box = protocol.find_box(record["question"])
        result = run_code(mini_expert.repair_code(["crop"], [round(v) for v in box]), folder / record["ori_image_path"],
                          crop_box=box)
        assert result.ok, result.error
        pixels = np.asarray(Image.open(result.output_images[0]).convert("RGB"), dtype=np.float32).reshape(-1, 3)
        distances = {name: np.linalg.norm(pixels - np.array(rgb), axis=1)
                     for name, rgb in mat_search_mini.COLOURS.items()}
        counts = {name: int((d < 40).sum()) for name, d in distances.items()}
        assert max(counts, key=counts.get) == record["answers"][0]


def test_held_out_search_world_shares_no_company_with_the_train_worlds(tmp_path):
    questions, _ = mat_search_mini.generate(tmp_path / "train", count=12, seed=0, worlds=3)
    records = json.loads(questions.read_text())
    assert {r["corpus"] for r in records} == {"corpus_0.jsonl", "corpus_1.jsonl", "corpus_2.jsonl"}
    train = [c for seed in (0, 1, 2) for c in mat_search_mini.build_world(seed)]
    held_out = mat_search_mini.build_world(1000)
    # names come from shared syllables, so one may recur by chance, but never with the same facts
    assert not {(c.name, c.city, c.founded, c.founder) for c in train} & {
        (c.name, c.city, c.founded, c.founder) for c in held_out}
    assert {r["world_seed"] for r in records} == {0, 1, 2}
    for record in records:  # each question's company is described in its own world's corpus
        corpus = (tmp_path / "train" / record["corpus"]).read_text()
        assert f'"{record["company"]}-emblem"' in corpus
    assert len({c.emblem for c in held_out}) == len(held_out)  # an emblem names one company


def test_expert_traces_are_all_correct_and_direct_ones_offer_no_tools(tmp_path):
    world = build_world(tmp_path / "world", coding_train=16, coding_test=4, coding_rl=6, search_train=8,
                        search_test=4, search_worlds=4, search_rl=4, hidden_train=2, hidden_test=2, hidden_rl=2)
    # GRPO's prompts are items the SFT traces (train split) and the held-out split do not contain
    splits = {split: json.loads(world.coding(split).read_text()) for split in ("train", "test", "rl")}
    assert len(splits["rl"]) == 6
    pixels = {split: {(world.coding(split).parent / r["processed_image_path"]).read_bytes() for r in records}
              for split, records in splits.items()}
    assert not pixels["rl"] & (pixels["train"] | pixels["test"])
    search = {split: json.loads(world.search(split).read_text()) for split in ("train", "test", "rl")}
    companies = {split: {r["company"] for r in records} for split, records in search.items()}
    assert len(search["rl"]) == 4 and not companies["rl"] & (companies["train"] | companies["test"])
    store = Store()
    run_id = record_expert_traces(world, store)
    summary = store.get_run(run_id)["summary"]
    assert summary == {"episodes": 16 + 4 + 8, "correct": 28}
    traces = [store.get_trace(t["id"]) for t in store.list_traces(run_id=run_id, limit=100)]
    direct = [t for t in traces if len(t.turns) == 1 and t.turns[0].action == "answer"
              and t.messages[0]["content"] == protocol.system_prompt(())]
    assert len(direct) == 4
    coded = [t for t in traces if any(turn.tool_call and turn.tool_call.name == "code" for turn in t.turns)]
    assert coded and all(turn.tool_call.ok for t in coded for turn in t.turns if turn.tool_call)
    searched = [t for t in traces if any(turn.action == "search" for turn in t.turns)]
    assert len(searched) == 8 and all("<information> 1. Content:" in (t.turns[0].feedback or "") for t in searched)


def test_expert_search_answers_are_the_same_tokens_as_in_the_result_they_copy(tmp_path):
    from transformers import AutoTokenizer

    from workbench.settings import DEMO_MODEL_DIR as MODEL_DIR

    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    world = build_world(tmp_path / "world", coding_train=1, coding_test=1, coding_rl=1, search_train=12,
                        search_test=1, search_worlds=3, search_rl=1, hidden_train=1, hidden_test=1, hidden_rl=1)
    store = Store()
    run_id = record_expert_traces(world, store, coding=False)
    traces = [store.get_trace(t["id"]) for t in store.list_traces(run_id=run_id, limit=100)]
    assert len(traces) == 12 and any(len(t.turns) == 3 for t in traces)  # one- and two-search questions

    def contains(haystack: str, needle: str) -> bool:
        ids, part = tokenizer(haystack)["input_ids"], tokenizer(needle)["input_ids"]
        return any(ids[i:i + len(part)] == part for i in range(len(ids) - len(part) + 1))

    for trace in traces:
        answer, result = trace.turns[-1].raw, trace.turns[-2].feedback
        # the answer as written inside its tag is a token span of the result it comes from
        assert f" {trace.final_answer} " in answer and contains(result, f" {trace.final_answer}")
        assert contains(answer, f" {trace.final_answer}")
