"""UI callbacks as plain functions: forms, uploads, playground, trace filters/stepper/group/compare,
run charts and exports, and the public-demo restrictions. No browser, no server."""

import csv

import gradio as gr
import pytest
from PIL import Image

from tests.ui_fixtures import CURVE_RUNS, seed_metric_runs
from workbench import images as image_intake
from workbench.agent.runner import RunnerConfig
from workbench.fields import field_help
from workbench.run_charts import MetricSeriesCache, Series, detect_tool_collapse, ema
from workbench.store import Store
from workbench.trace import ToolCall, Trace, Turn
from workbench.ui import render, tab_playground, tab_runs, tab_traces
from workbench.ui.app import create_app
from workbench.ui.context import UIContext
from workbench.ui.demo_runs import GRPO_RUN, TRACES_RUN, seed_demo_runs
from workbench.ui.deployment import DeploymentPolicy, PolicyError, Viewer, parse_auth
from workbench.ui.forms import build_form, form_values
from workbench.ui.images_view import input_images

LOCAL = Viewer()
DARK = next(name for name in tab_playground.demo_names() if name.startswith("dark:"))
ALICE = Viewer(public_demo=True, visitor="alice-session")
BOB = Viewer(public_demo=True, visitor="bob-session")


@pytest.fixture
def store():
    store = Store()
    seed_demo_runs(store)
    seed_metric_runs(store)
    return store


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (200, 100), "teal").save(path)
    return path


def visitor_run(store: Store, viewer: Viewer, reward: float = 0.5) -> Trace:
    """A playground run of `viewer` with one trace whose question carries a crop box."""
    run_id = store.create_run("visitor run", "playground", config=viewer.run_tags())
    sha = store.put_image(Image.new("RGB", (100, 100), "white"))
    trace = Trace(question="Read the text within the [100, 200, 500, 600] of the image.", images=[sha],
                  turns=[Turn(index=0, raw="<think>x</think><answer>hi</answer>", think="<script>alert(1)</script>",
                              action="answer", argument="hi", image=sha)],
                  final_answer="hi", stop_reason="answered", rewards={"total": reward}, run_id=run_id,
                  item_id="item-7", group_id=f"{run_id}:0")
    store.save_trace(trace)
    return trace


# -- forms -------------------------------------------------------------------------------------
def test_form_controls_follow_field_types_and_help():
    with gr.Blocks():
        controls = build_form(RunnerConfig, tab_playground.config_specs(DeploymentPolicy()))
    assert isinstance(controls["tools"], gr.CheckboxGroup)
    assert isinstance(controls["protocol"], gr.Radio)
    assert isinstance(controls["max_turns"], gr.Slider)
    assert isinstance(controls["retry_parse_errors"], gr.Checkbox)
    assert isinstance(controls["system_prompt"], gr.Textbox)
    assert controls["max_new_tokens"].label == "Max new tokens"
    assert controls["max_turns"].info == field_help(RunnerConfig)["max_turns"]


def test_form_values_build_the_dataclass_and_name_bad_fields():
    names = tab_playground.config_names()
    values = {"tools": ["code"], "protocol": "tags", "layout": "chat", "max_turns": 3.0, "samples": 2,
              "max_new_tokens": 64, "temperature": 0.7, "top_p": 1, "seed": 1, "tool_workers": 2,
              "retry_parse_errors": True, "system_prompt": "  "}
    config = form_values(RunnerConfig, names, [values[n] for n in names])
    assert config.tools == ("code",) and config.max_turns == 3 and isinstance(config.max_turns, int)
    assert config.system_prompt is None and config.layout == "chat"
    values["max_turns"] = 2.5
    with pytest.raises(ValueError, match="Max turns"):
        form_values(RunnerConfig, names, [values[n] for n in names])


def test_runner_config_reports_invalid_and_over_limit_settings():
    names = tab_playground.config_names()
    base = dict(RunnerConfig().__dict__, tools=["code"])
    with pytest.raises(tab_playground.PlaygroundError, match="temperature"):
        tab_playground.runner_config(DeploymentPolicy(), [dict(base, samples=3)[n] for n in names])
    public = DeploymentPolicy.from_env(public_demo=True)
    with pytest.raises(tab_playground.PlaygroundError, match="limit of 256"):
        tab_playground.runner_config(public, [dict(base, max_new_tokens=1024)[n] for n in names])


# -- uploads and the playground ----------------------------------------------------------------
def test_accept_images_stores_good_files_and_explains_bad_ones(tmp_path, png, monkeypatch):
    store = Store()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    monkeypatch.setattr(image_intake, "MAX_IMAGE_PIXELS", 50_000)
    stored, problems = tab_playground.accept_images(store, [str(png), str(text), str(big)], None)
    assert len(stored) == 1 and stored[0].is_file()
    assert any("notes.png" in p and "not an image file" in p for p in problems)
    assert any("big.png" in p and "megapixels" in p for p in problems)
    gallery, preview_problems = tab_playground.preview_images([str(png), str(text)], None, "what?")
    assert len(gallery) == 1 and len(preview_problems) == 1


def test_demo_item_fills_its_question_and_tool_and_draws_its_box():
    from workbench import protocol
    from workbench.ui.assets import demo_image, demo_names

    name = next(n for n in demo_names() if n.startswith("crop:"))
    question = demo_image(name).question
    assert tab_playground.demo_question(name, "") == question
    assert tab_playground.demo_question(name, "mine?") == "mine?"
    other = next(n for n in demo_names() if n.startswith("search:"))
    assert tab_playground.demo_question(other, question) == demo_image(other).question, "a demo question is replaced"
    assert tab_playground.demo_tools(name, ["search"]) == ["code"]
    assert tab_playground.demo_tools(other, ["code"]) == ["search"]
    assert tab_playground.demo_tools(tab_playground.NO_DEMO, ["code", "search"]) == ["code", "search"]
    gallery, problems = tab_playground.preview_images(None, name, question)
    image, caption = gallery[0]
    box = protocol.find_box(question)
    assert not problems and f"box {[int(v) for v in box]}" in caption
    x = round(box[0] / 1000 * image.width) + 1
    y = round((box[1] + box[3]) / 2000 * image.height)
    assert image.getpixel((x, y))[0] > 200 and image.getpixel((x, y))[1] < 100  # red outline


@pytest.mark.parametrize("kwargs, message", [
    (dict(question="  "), "type a question"),
    (dict(demo_name=None), "no image"),
    (dict(model="/models/any-path"), "only the embedded model"),
    (dict(adapter="/adapters/lora"), "does not load adapters"),
])
def test_public_playground_refuses_before_loading_anything(kwargs, message):
    ctx = UIContext(Store(), DeploymentPolicy.from_env(public_demo=True))
    call = dict(files=None, demo_name=DARK, question="What colour is it?", model="demo", adapter=None)
    call.update(kwargs)
    stream = tab_playground.run_playground(ctx, ALICE, config=RunnerConfig(tools=("code",), max_new_tokens=64), **call)
    with pytest.raises(tab_playground.PlaygroundError, match=message):
        next(stream)


def test_playground_streams_turns_and_tags_the_visitor_run(tmp_path):
    ctx = UIContext(Store(), DeploymentPolicy.from_env(public_demo=True))
    config = RunnerConfig(tools=("code",), max_turns=2, max_new_tokens=16)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    updates = list(tab_playground.run_playground(ctx, ALICE, [str(broken)], DARK, "What colour is the shape?",
                                                 "demo", None, config))
    assert updates[0].status.startswith("loading") and updates[-1].trace_id
    assert len(updates[0].warnings) == 1 and "broken.jpg" in updates[0].warnings[0]
    assert len(updates) >= 3  # loading, at least one turn, done
    trace = ctx.store.get_trace(updates[-1].trace_id)
    assert trace.turns and trace.stop_reason in ("answered", "parse_error", "max_turns", "tool_error")
    run = ctx.store.get_run(trace.run_id)
    assert run["config"]["visitor"] == "alice-session" and run["status"] == "succeeded"
    assert ALICE.can_see_run(run) and not BOB.can_see_run(run)


def test_playground_without_any_sandbox_says_so_once_and_still_answers(monkeypatch):
    """No isolation on this host: one plain sentence, then the run goes on and a code turn fails cleanly."""
    from tools.code_sandbox import SandboxUnavailable
    from workbench.agent import tools as agent_tools

    def unavailable():
        raise SandboxUnavailable("no sandbox isolation works here (bwrap: not installed). Install bubblewrap.")

    monkeypatch.setattr(agent_tools, "shared_sandbox", unavailable)
    ctx = UIContext(Store(), DeploymentPolicy.from_env(public_demo=True))
    config = RunnerConfig(tools=("code",), max_turns=3, max_new_tokens=96)
    updates = list(tab_playground.run_playground(ctx, ALICE, None, DARK, demo_question_of(DARK), "demo", None,
                                                 config))
    said = [w for u in updates for w in u.warnings]
    assert len(said) == 1 and said[0].startswith("Code execution is off on this host") and "bubblewrap" in said[0]
    trace = ctx.store.get_trace(updates[-1].trace_id)
    calls = [t.tool_call for t in trace.turns if t.tool_call is not None]
    assert calls and not calls[0].ok and "code execution is off" in calls[0].error  # the demo model wrote code
    assert ctx.store.get_run(trace.run_id)["status"] == "succeeded"


def demo_question_of(name: str) -> str:
    return tab_playground.demo_question(name, "")


# -- traces ------------------------------------------------------------------------------------
def _shipped(store: Store) -> int:
    return store.count_traces(TRACES_RUN) + store.count_traces(GRPO_RUN)


def test_trace_filters_by_outcome_reward_item_and_run(store):
    everything = tab_traces.list_traces(store, LOCAL, tab_traces.TraceFilters())
    assert len(everything) == min(_shipped(store), tab_traces.LIST_LIMIT)
    answered = tab_traces.list_traces(store, LOCAL, tab_traces.TraceFilters.from_inputs(
        TRACES_RUN, "", "answered", "", ""))
    assert {r["stop_reason"] for r in answered} == {"answered"} and {r["run_id"] for r in answered} == {TRACES_RUN}
    rich = tab_traces.list_traces(store, LOCAL, tab_traces.TraceFilters.from_inputs(GRPO_RUN, "", "all", "2.5", ""))
    totals = [store.get_trace(r["id"]).rewards.get("total", 0.0) for r in store.list_traces(run_id=GRPO_RUN,
                                                                                           limit=1000)]
    assert rich and {r["reward_total"] >= 2.5 for r in rich} == {True}
    assert len(rich) == min(sum(total >= 2.5 for total in totals), tab_traces.LIST_LIMIT)
    by_item = tab_traces.list_traces(store, LOCAL, tab_traces.TraceFilters(item_id="mat-coding-43"))
    assert [r["run_id"] for r in by_item] == [TRACES_RUN]
    table = tab_traces.trace_table(by_item)
    assert table[0][0] == "answered" and table[0][-1] == by_item[0]["id"]


def test_imported_result_files_do_not_bury_the_episodes(store, tmp_path):
    import json

    from workbench.benchmarks.evaluation import import_predictions

    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"id": i, "gt": ["a"], "pred_answer": "a"} for i in range(250)]))
    imported, _ = import_predictions(store, results, "multihop", "paper results")  # newer than every episode
    shown = tab_traces.list_traces(store, LOCAL, tab_traces.TraceFilters.from_inputs("all", "", "all", "", ""))
    assert shown and {r["run_id"] for r in shown}.isdisjoint({imported}) and min(r["num_turns"] for r in shown) > 0
    scored = tab_traces.list_traces(store, LOCAL, tab_traces.TraceFilters.from_inputs(
        "all", "", "all", "", "", "scored results (imported files)"))
    assert {r["run_id"] for r in scored} == {imported} and len(scored) == tab_traces.LIST_LIMIT
    one_run = tab_traces.list_traces(store, LOCAL, tab_traces.TraceFilters.from_inputs(imported, "", "all", "", ""))
    assert len(one_run) == tab_traces.LIST_LIMIT  # picking the imported run shows its answers


def test_public_visitors_see_only_their_runs_and_the_demo_runs(store):
    mine = visitor_run(store, ALICE)
    alice_ids = {r["id"] for r in tab_traces.list_traces(store, ALICE, tab_traces.TraceFilters())}
    bob_ids = {r["id"] for r in tab_traces.list_traces(store, BOB, tab_traces.TraceFilters())}
    assert mine.id in alice_ids and mine.id not in bob_ids
    assert len(bob_ids) == min(_shipped(store), tab_traces.LIST_LIMIT)  # the shipped demo traces
    assert tab_traces.list_traces(store, BOB, tab_traces.TraceFilters(run_id=mine.run_id)) == []
    with pytest.raises(tab_traces.TraceNotFound):
        tab_traces.load_trace(store, BOB, mine.id)
    assert tab_traces.load_trace(store, ALICE, mine.id).id == mine.id
    bob_runs = [value for _, value in tab_traces.run_choices(store, BOB)]
    assert mine.run_id not in bob_runs and {GRPO_RUN, TRACES_RUN} <= set(bob_runs)


def test_stepper_walks_the_demo_models_crop_episode_turn_by_turn(store):
    trace_id = tab_traces.list_traces(store, LOCAL, tab_traces.TraceFilters(item_id="mat-coding-43"))[0]["id"]
    trace = tab_traces.load_trace(store, LOCAL, trace_id)
    index = tab_traces.step_turn(0, -1, len(trace.turns))
    first = tab_traces.turn_view(trace, index)
    assert first.position == "turn 1 of 3" and first.code is None and "&lt;problem&gt;" in first.turn
    second = tab_traces.turn_view(trace, tab_traces.step_turn(index, +1, len(trace.turns)))
    assert "denormalize_box" in second.code and "cv2.imwrite" in second.code
    assert [caption.split(" · ")[0] for _, caption in second.images] == ["input 1", "after: tool output 1"]
    last = tab_traces.turn_view(trace, tab_traces.step_turn(2, +1, len(trace.turns)))
    assert last.position == "turn 3 of 3" and "&lt;answer&gt;" in last.turn
    assert "f1" in last.header


def test_crop_box_is_drawn_on_the_input_and_model_text_is_escaped(store):
    trace = visitor_run(store, LOCAL)
    (image, caption), = input_images(trace)
    assert caption == "input 1 · box [100, 200, 500, 600]"
    assert image.getpixel((10, 40))[:3] == (239, 68, 68) and image.getpixel((30, 40)) == (255, 255, 255)
    html = render.turn_html(trace.turns[0], 1)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_playground_transcript_shows_each_tools_work_in_place(store):
    """Code (highlighted), stdout/stderr, the image before and after, and a failure's error -- not only in Traces."""
    before = store.put_image(Image.new("RGB", (40, 30), "navy"))
    after = store.put_image(Image.new("RGB", (30, 40), "gold"))
    ran = ToolCall("code", "```python\nimport cv2\nprint('rotated')\n```", "", output_images=[after],
                   stdout="rotated\n")
    failed = ToolCall("code", "```python\nx = (\n```", "<information> Code error </information>", ok=False,
                      error="SyntaxError: '(' was never closed", stderr="SyntaxError: '(' was never closed")
    trace = Trace(question="q", images=[before], gold=["up"], rewards={"f1": 1.0, "em": 1.0, "format": 1.0,
                                                                      "total": 2.0}, final_answer="up",
                  turns=[Turn(0, "r", think="t", action="code", argument=ran.argument, image=before, tool_call=ran),
                         Turn(1, "r", think="t", action="code", argument=failed.argument, image=after,
                              tool_call=failed)])
    html = render.transcript_html([trace])
    assert '<span class="k">import</span> cv2' in html and "rotated" in html  # code and its stdout
    assert html.count("data:image/jpeg;base64,") == 3 and "before" in html and "after" in html
    assert "failed: SyntaxError" in html and "<b>stderr</b>" in html  # a failed turn says why, unfolded
    assert ">right</span> F1 1.00 · EM 1.00 · gold: up" in html


def test_a_demo_item_is_scored_against_its_answer(store):
    ctx = UIContext(store, DeploymentPolicy.from_env(public_demo=False))
    config = RunnerConfig(tools=("code",), max_turns=4, max_new_tokens=192, layout="chat")
    question = tab_playground.demo_question(DARK, "")
    updates = list(tab_playground.run_playground(ctx, LOCAL, None, DARK, question, "demo", None, config))
    trace = ctx.store.get_trace(updates[-1].trace_id)
    assert trace.gold == [tab_playground.demo_image(DARK).answer]  # Traces shows the gold now
    assert {"f1", "em", "format", "answer_f1", "total"} <= set(trace.rewards)
    assert tab_playground.verdict(trace) in updates[-1].status and tab_playground.verdict(trace)
    typed = list(tab_playground.run_playground(ctx, LOCAL, None, DARK, "What colour is it really?", "demo", None,
                                               config, expected="violet"))
    assert ctx.store.get_trace(typed[-1].trace_id).gold == ["violet"]  # an edited question keeps no demo gold


def _a_grpo_group(store: Store) -> list[dict]:
    first = store.list_traces(run_id=GRPO_RUN, limit=1)[0]
    return store.list_traces(group_id=first["group_id"], limit=100)


def test_group_view_shows_every_sample_with_rewards_and_advantages(store):
    rows = _a_grpo_group(store)
    trace = tab_traces.load_trace(store, LOCAL, rows[0]["id"])
    html = tab_traces.group_view(store, LOCAL, trace)
    samples = store.get_run(GRPO_RUN)["config"]["num_generations"]  # every completion of the prompt
    assert samples > 1 and len(rows) == samples and html.count('class="wb-card"') == samples
    assert '<pre class="wb-code">' in html and "data:image/jpeg;base64," in html  # code and tool images, formatted
    for sample in range(samples):
        assert f"sample {sample}" in html
    advantages = [r["advantage"] for r in rows]
    assert abs(sum(advantages)) < 1e-3 and "advantage" in html


def test_compare_two_samples_of_one_item_turn_by_turn(store):
    rows = _a_grpo_group(store)
    first = tab_traces.load_trace(store, LOCAL, rows[0]["id"])
    candidates = tab_traces.compare_candidates(store, LOCAL, first)
    assert len(candidates) >= 3 and first.id not in [value for _, value in candidates]
    html = tab_traces.compare_view(store, LOCAL, first.id, candidates[0][1])
    other = tab_traces.load_trace(store, LOCAL, candidates[0][1])
    assert "turn 1" in html and first.id[:12] in html and other.id[:12] in html
    assert "different questions" not in html


def test_search_results_render_as_a_list_from_information_text():
    call = ToolCall(name="search", argument="tower",
                    output_text="<information> 1. Content: Built in 1889. 2. Content: 330 m tall. </information>")
    assert [hit["snippet"] for hit in render.search_results(call)] == ["Built in 1889.", "330 m tall."]
    assert render.search_results_html(call).count("<li>") == 2
    recorded = ToolCall(name="search", argument="tower", output_text="<information> ... </information>",
                        details={"hits": [{"title": "Tower", "snippet": "Built <b>1889</b>", "url": "https://x.org/t"}]})
    html = render.search_results_html(recorded)
    assert 'href="https://x.org/t"' in html and "Built &lt;b&gt;1889&lt;/b&gt;" in html


# -- runs --------------------------------------------------------------------------------------
def test_runs_load_once_then_poll_only_new_rows(store):
    session, chosen = tab_runs.select_runs(store, LOCAL, None, list(CURVE_RUNS))
    assert chosen == list(CURVE_RUNS)
    before = session.cache.row_count
    assert tab_runs.poll_runs(store, session, chosen) is False
    store.log_metrics(CURVE_RUNS[0], 121, {"reward": 2.0, "tools/call_frequency": 0.9})
    assert tab_runs.poll_runs(store, session, chosen) is True
    assert session.cache.row_count == before + 2
    assert session.cache.get(CURVE_RUNS[0], "reward").steps[-1] == 121


def test_runs_selection_hides_other_visitors_runs(store):
    mine = visitor_run(store, ALICE)
    store.log_metrics(mine.run_id, 1, {"reward": 1.0})
    session, chosen = tab_runs.select_runs(store, BOB, None, [mine.run_id, CURVE_RUNS[0]])
    assert chosen == [CURVE_RUNS[0]] and mine.run_id not in session.cache.series


def test_runs_view_charts_warns_on_tool_collapse_and_diffs_configs(store):
    session, chosen = tab_runs.select_runs(store, LOCAL, None, list(CURVE_RUNS))
    view = tab_runs.build_view(session, chosen, None, 0.6)
    assert view.metric == "reward" and "tools/call_frequency" in view.metric_names
    assert "collapsing" in view.warnings and CURVE_RUNS[1] in view.warnings and CURVE_RUNS[0] not in view.warnings
    assert len(view.metric_figure.data) == 4  # raw + smoothed line per run
    assert set(view.diff["setting"]) == {"beta", "learning_rate"}
    best = view.summary[(view.summary["metric"] == "reward")]
    assert len(best) == 2 and (best["best"] >= best["last"]).all()


def test_runs_show_which_reward_preset_trained_them(store):
    from workbench.rewards import RewardSpec, describe

    paper = store.create_run("paper rewards", "train", reward_spec=describe(RewardSpec(preset="paper")))
    default = store.create_run("default rewards", "train", reward_spec=describe(RewardSpec()))
    labels = {value: label for label, value in tab_runs.run_choices(store, LOCAL)}
    assert "· paper rewards ·" in labels[paper] and "· workbench rewards ·" in labels[default]
    assert "rewards" not in labels[CURVE_RUNS[0]].split("·")[-2], "a run without a reward definition names none"
    session, chosen = tab_runs.select_runs(store, LOCAL, None, [paper, default])
    assert session.labels[paper].endswith("· paper rewards")
    view = tab_runs.build_view(session, chosen, None, 0.6)
    assert view.diff.iloc[0].tolist() == ["reward preset", "paper", "workbench"]


def test_runs_open_with_the_newest_runs_that_logged_metrics():
    store = Store()
    seed_demo_runs(store)  # a fresh workbench: the shipped demo runs only
    assert tab_runs.default_selection(store, LOCAL) == [GRPO_RUN]
    older = store.create_run("older", "train")
    store.log_metrics(older, 1, {"reward": 0.1})
    store.create_run("newest, no metrics yet", "train")
    newer = store.create_run("newer", "train")
    store.log_metrics(newer, 1, {"reward": 0.2})
    assert tab_runs.default_selection(store, LOCAL, limit=2) == [newer, older]
    assert tab_runs.default_selection(store, BOB) == [GRPO_RUN], "other people's runs are not opened"


def test_every_drawn_run_is_in_the_legend_once_with_clean_values(store):
    late = store.create_run("only the second component", "train")
    for step in range(1, 4):
        store.log_metrics(late, step, {"rewards/code/mean": 0.1 * step, "reward": 0.90000004})
    session, chosen = tab_runs.select_runs(store, LOCAL, None, [CURVE_RUNS[0], late])
    figure = tab_runs.build_view(session, chosen, "reward", 0.6).rewards_figure
    legend = [trace["name"] for trace in figure.data if trace["showlegend"]]
    drawn = {trace["legendgroup"] for trace in figure.data}
    assert sorted(legend) == sorted(session.labels[run] for run in drawn) and len(drawn) == 2
    flat = tab_runs.build_view(session, [late], "reward", 0.0).metric_figure.data[0]
    assert list(flat["y"]) == [0.9, 0.9, 0.9], "float32 noise is rounded away before plotly picks ticks"


def test_csv_export_keeps_whole_run_names_and_png_draws_raw_values_behind_the_smoothed(store, tmp_path):
    name = "a run whose name is much longer than the chart legend shows, to check the export"
    long_run = store.create_run(name, "train")
    for step in range(200):
        store.log_metrics(long_run, step, {"reward": float(step % 2)})  # noisy: raw and smoothed differ
    session, chosen = tab_runs.select_runs(store, LOCAL, None, [long_run])
    assert "…" in session.labels[long_run]
    rows = list(csv.DictReader(tab_runs.export_csv(session, chosen, 0.9).open()))
    assert {row["run"] for row in rows} == {name}

    def faint_pixels(smoothing: float) -> int:  # the raw line: matplotlib's first colour at alpha 0.3 on white
        with Image.open(tab_runs.export_png(session, chosen, "reward", smoothing)) as chart:
            counts = chart.convert("RGB").getcolors(maxcolors=1_000_000)
        return sum(n for n, (r, g, b) in counts if abs(r - 188) < 12 and abs(g - 210) < 14 and abs(b - 230) < 12)

    assert faint_pixels(0.9) > 3 * faint_pixels(0.0), "smoothed: the raw zigzag is drawn too, faintly"


def test_chart_exports_csv_and_png(store):
    session, chosen = tab_runs.select_runs(store, LOCAL, None, list(CURVE_RUNS))
    rows = list(csv.DictReader(tab_runs.export_csv(session, chosen, 0.6).open()))
    assert len(rows) == 2 * 120 * 6 and set(rows[0]) == {"run", "run_id", "metric", "step", "value", "smoothed"}
    png_path = tab_runs.export_png(session, chosen, "reward", 0.6)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png_path) as chart:
        assert chart.width > 500 and len(chart.getcolors(maxcolors=100_000)) > 10
    with pytest.raises(ValueError, match="select runs"):
        tab_runs.export_csv(session, [], 0.6)


def test_smoothing_cache_matches_a_fresh_ema_after_appends_and_rewrites():
    series = Series()
    for step in range(50):
        series.add(step, float(step % 7))
    assert series.smoothed(0.8) == ema(series.values, 0.8)
    series.add(50, 3.0)
    series.add(10, 100.0)  # a resumed job re-logged an old step
    assert series.smoothed(0.8) == ema(series.values, 0.8)
    collapse = detect_tool_collapse("r", Series(list(range(40)), [0.9] * 20 + [0.01] * 20), 0.5)
    assert collapse is not None and collapse.peak > 0.8


def test_overlapping_polls_do_not_duplicate_points():
    store = Store()
    run = store.create_run("r", "train")
    store.log_metrics(run, 1, {"reward": 1.0})
    first, second = MetricSeriesCache(), MetricSeriesCache()
    first.poll(store, [run])
    second.series, second.last_row_id = first.series, {run: 0}  # a stale copy of the same session state
    second.poll(store, [run])
    assert first.get(run, "reward").steps == [1]


# -- deployment --------------------------------------------------------------------------------
def test_policy_from_env_and_auth(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PUBLIC_DEMO", "1")
    monkeypatch.setenv("WORKBENCH_AUTH", "ann:pw")
    policy = DeploymentPolicy.from_env()
    assert policy.public_demo and policy.auth == ("ann", "pw") and not policy.show_training
    with pytest.raises(PolicyError):
        parse_auth("no-colon")
    policy.check_model("demo", None)
    with pytest.raises(PolicyError):
        policy.check_model("tiny", None)
    with pytest.raises(PolicyError):
        policy.check_model("Qwen/Qwen2.5-VL-3B-Instruct", None)
    DeploymentPolicy().check_model("/any/local/path", "/any/adapter")


def test_public_app_locks_the_model_and_limits_the_queue(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PUBLIC_DEMO", "1")
    app, ctx = create_app(store=Store())
    by_label = {getattr(b, "label", None): b for b in app.blocks.values()}
    assert by_label["Model"].interactive is False and by_label["Model"].choices == [("demo", "demo")]
    assert by_label["LoRA adapter folder"].visible is False and by_label["Search corpus (JSONL file or folder)"
                                                                          ].visible is False
    assert app._queue.max_size == ctx.policy.queue_size and app._queue.default_concurrency_limit == 2
    assert {run["id"] for run in ctx.store.list_runs()} >= {TRACES_RUN, GRPO_RUN}
