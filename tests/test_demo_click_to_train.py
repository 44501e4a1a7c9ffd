"""Click-to-train's data: the held-out items are never among the start adapter's SFT items or GRPO's prompts."""

import inspect
import json
from pathlib import Path

import pytest

from trainers.demo_data import click_to_train_config
from trainers.demo_model import grpo_config
from workbench.benchmarks import mat_coding_mini
from workbench.store import Store
from workbench.synth.demo_world import World, build_world, record_start_traces


@pytest.fixture
def store():
    return Store()


def _items(items_file: Path) -> set[tuple[str, bytes]]:
    """Each item as (question, clean image bytes): the same question on the same picture is the same item,
    whatever noise its degraded copy drew."""
    records = json.loads(items_file.read_text())
    return {(r["question"], (items_file.parent / r["ori_image_path"]).read_bytes()) for r in records}


def _hidden_world(root: Path, **counts: int) -> World:
    """The demo world's hidden-colour splits only, at build_world's sizes unless `counts` says otherwise."""
    defaults = {name: p.default for name, p in inspect.signature(build_world).parameters.items()}
    world = World(root)
    for split in ("train", "rl", "test"):
        count = counts.get(split, defaults[f"hidden_{split}"])
        seed = mat_coding_mini.hidden_split_seed(split)
        mat_coding_mini.generate_hidden_colours(world.hidden(split).parent, count, seed=seed)
    return world


def test_held_out_items_are_not_sft_or_grpo_items(tmp_path):
    world = _hidden_world(tmp_path)
    held_out = _items(world.hidden("test"))
    assert len(held_out) == 40
    for split in ("train", "rl"):  # the start adapter's SFT items, GRPO's prompts
        assert not held_out & _items(world.hidden(split)), f"held-out items in the {split} split"
    config = grpo_config("demo", world, adapter=tmp_path)  # the shipped run's and the Train tab's settings
    assert config.data_files == [str(world.hidden("rl"))] and config.eval_data_files == [str(world.hidden("test"))]
    assert config.finetune == "lora" and config.init_adapter == str(tmp_path) and config.tools == ["code"]


def _pictures(items_file: Path) -> set[str]:
    """The stored-image ids of the degraded images an episode on these items starts from."""
    from workbench.images import put_image

    return {put_image(items_file.parent / r["processed_image_path"]).sha for r in json.loads(items_file.read_text())}


def test_start_adapter_sft_data_comes_from_the_train_split_only(store, tmp_path):
    world = _hidden_world(tmp_path, train=5, rl=5, test=5)
    run_id = record_start_traces(world, store, direct_share=0.6)
    traces = [store.get_trace(row["id"]) for row in store.list_traces(run_id=run_id)]
    seen = {str(trace.images[0]).removeprefix("sha256:") for trace in traces}
    assert len(traces) == 5 and seen == _pictures(world.hidden("train"))
    assert not seen & (_pictures(world.hidden("test")) | _pictures(world.hidden("rl")))
    direct = [trace for trace in traces if not any(turn.tool_call for turn in trace.turns)]
    assert len(direct) == 3, "the expert answers at once on direct_share of the items, repairs the image on the rest"


def test_train_tab_demo_data_is_the_worlds_rl_and_held_out_split(store, monkeypatch, tmp_path):
    from trainers.service import prepare_demo_training

    monkeypatch.setattr("trainers.service.DEMO_PROMPTS", 6)
    demo = prepare_demo_training(store, count=2)
    world = _hidden_world(tmp_path, train=1, rl=6)
    assert _items(Path(demo["eval_file"])) == _items(world.hidden("test"))
    assert _items(Path(demo["items_file"])) == _items(world.hidden("rl"))
    assert not _items(Path(demo["eval_file"])) & _items(Path(demo["items_file"]))
    config = click_to_train_config("demo", demo["items_file"], demo["eval_file"], init_adapter=demo["start_adapter"])
    assert config.finetune == "lora" and Path(config.init_adapter).name == "start_adapter"


def test_tool_use_chart_draws_held_out_answer_f1_and_tool_calls_beside_the_tool_rate():
    from workbench.run_charts import MetricSeriesCache, Series, tool_rate_name
    from workbench.ui import figures

    cache = MetricSeriesCache()
    cache.series["r"] = {"tools/call_rate": Series([1, 2, 3, 4], [0.1, 0.5, 0.9, 1.0]),
                         "eval_tools/call_rate_degraded": Series([0, 4], [0.15, 1.0]),
                         "eval_rewards/answer_f1/mean": Series([0, 4], [0.3, 0.7])}
    chart = figures.tool_rate_figure(cache, ["r"], {"r": "demo"}, tool_rate_name(cache.names(["r"])), 0.0)
    drawn = {line["name"]: line["y"].tolist() for line in chart.data if line.get("name")}
    assert drawn == {"demo · tools/call_rate (train)": [0.1, 0.5, 0.9, 1.0],
                     "demo · held-out tool calls, degraded images": [0.15, 1.0],
                     "demo · held-out answer F1": [0.3, 0.7]}
    assert len({line["line"]["color"] for line in chart.data if line.get("name")}) == 3  # one run: a colour each
    del cache.series["r"]["eval_rewards/answer_f1/mean"], cache.series["r"]["eval_tools/call_rate_degraded"]
    plain = figures.tool_rate_figure(cache, ["r"], {"r": "demo"}, "tools/call_rate", 0.0)
    assert [line["name"] for line in plain.data if line.get("name")] == ["demo"]  # no evaluation: as before
