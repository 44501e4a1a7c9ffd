"""Pieces of the training jobs on the tiny model: data, chat format, rewards plumbing, traces (no training)."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from transformers import TrainerControl, TrainerState, TrainingArguments

from trainers import chat_format, data, modeling
from trainers.action_stops import ActionStops
from trainers.config import GrpoJobConfig, SftJobConfig
from trainers.demo_data import prepare_demo_data
from trainers.logging_callback import StoreLoggingCallback, group_std
from trainers.reward_adapters import component_rewards
from trainers.trace_builder import RolloutSnapshot, build_trace
from workbench import protocol
from workbench.rewards import RewardSpec
from workbench.store import Store
from workbench.trace import ToolCall


@pytest.fixture
def store():
    return Store()


@pytest.fixture
def demo(tmp_path, store):
    return prepare_demo_data(tmp_path / "demo", store, count=8, seed=3)


@pytest.fixture
def tags_processor():
    config = SftJobConfig(trace_runs=["x"])
    processor = modeling.load_processor(modeling.resolve_model_path("tiny"), config, padding_side="left")
    chat_format.prepare_processor(processor, "tags", tool_calls=True)
    return processor


def test_demo_data_gives_steps_rows_episodes_and_expert_traces(demo, store):
    rows = json.loads(demo.steps_file.read_text())
    assert {row["type"] for row in rows} >= {"pre_problem", "pre_answer"}
    coded = next(row for row in rows if row["type"] == "pre_code")
    assert "<tips>" in coded["context"] and coded["solution"].startswith("<think>")
    samples = data.load_step_samples([str(demo.steps_file)])
    assert len(samples) == len(rows) and samples[0].prompt_text.startswith("<query>")
    items = data.load_episode_items([str(demo.items_file)])
    assert len(items) == 8 and all(item.gold for item in items)
    from_rows = data.load_episode_items([str(demo.steps_file)])
    assert len(from_rows) == 8 and all(item.problem_labels for item in from_rows)
    traces = [store.get_trace(t["id"]) for t in store.list_traces(run_id=demo.expert_run)]
    coded_turns = [turn for trace in traces for turn in trace.turns if turn.tool_call]
    assert coded_turns and all(turn.tool_call.ok and turn.tool_call.output_images for turn in coded_turns)


def test_step_dataset_rows_carry_prompt_image_and_reward_columns(demo):
    samples = data.load_step_samples([str(demo.steps_file)])
    dataset = data.build_dataset(samples, max_pixels=56 * 56, preprocessing="workbench")
    row = dataset[0]
    assert row["prompt"][0]["role"] == "system" and "<problem>" in row["prompt"][0]["content"]
    assert isinstance(row["image"], Image.Image) and row["image"].width * row["image"].height <= 56 * 56 * 1.1
    assert row["type"] in data.STEP_TYPES and row["gt"]


def test_step_dataset_follows_the_papers_preprocessing_by_default(demo, tmp_path):
    """As the released script: 720x720 (aspect ratio not kept), instructions + newline + the step in one user turn."""
    wide = tmp_path / "wide.png"
    Image.new("RGB", (300, 100), "white").save(wide)
    sample = data.StepSample(prompt_text="<query> Q </query>", image_file=str(wide), solution="<answer> a </answer>",
                             type="pre_answer")
    row = data.build_dataset([sample], max_pixels=1024 * 1024)[0]
    (turn,) = row["prompt"]
    assert turn["role"] == "user" and turn["content"].endswith("</answer> ends the task. You have at most 5 turns."
                                                               "\n<query> Q </query>")
    assert row["image"].size == (720, 720)
    budget = data.build_dataset([sample], max_pixels=56 * 56)[0]["image"]
    assert budget.width == budget.height and budget.width * budget.height <= 56 * 56, "then the pixel budget"
    with pytest.raises(ValueError, match="preprocessing 'square'"):
        data.build_dataset([sample], max_pixels=56 * 56, preprocessing="square")


def test_tag_response_template_reads_actions_as_tool_calls(tags_processor):
    tokenizer = tags_processor.tokenizer
    text = "<think>too dark</think><code>```python\nprint(1)\n```</code>"
    parsed = tokenizer.parse_response(tokenizer(text)["input_ids"], prefix="<|im_start|>assistant\n")
    call = parsed["tool_calls"][0]["function"]
    assert call["name"] == "code" and call["arguments"] == {"argument": "```python\nprint(1)\n```"}
    assert chat_format.assistant_turn_text(parsed, "tags") == text
    answer = tokenizer.parse_response(tokenizer("<think>ok</think><answer>42</answer>")["input_ids"], prefix="")
    assert "tool_calls" not in answer and answer["content"] == "<think>ok</think><answer>42</answer>"
    stops = ActionStops(tokenizer, "tags")
    assert tokenizer.convert_ids_to_tokens(stops.token_ids) == ["</search>", "</code>", "</problem>", "</answer>"]
    assert not stops.by_string  # the tiny vocabulary has the tags as tokens: they stop as end-of-sequence ids


def test_tag_template_passes_trls_tool_checks(tags_processor):
    from trl.chat_template_utils import is_chat_template_prefix_preserving, supports_tool_calling

    assert supports_tool_calling(tags_processor)
    assert is_chat_template_prefix_preserving(tags_processor)


def test_rollout_tokens_equal_the_rendered_conversation(demo, tmp_path):
    """A tag tool turn stopped at </code> plus TRL's tool suffix is exactly the template's rendering."""
    from trainers.grpo import build_grpo_trainer

    config = GrpoJobConfig(data_files=[str(demo.items_file)], mode="episodes", tools=["code"],
                           num_generations=2, per_device_train_batch_size=2, max_steps=1)
    setup = build_grpo_trainer(config, tmp_path / "out", with_logging=False)
    try:
        trainer, processor = setup.trainer, setup.trainer.processing_class
        system = protocol.system_prompt(("code",), "tags")
        image = Image.new("RGB", (56, 56), (10, 20, 30))
        prompt = [{"role": "system", "content": [{"type": "text", "text": system}]},
                  {"role": "user", "content": [{"type": "image", "image": image},
                                               {"type": "text", "text": protocol.query_text("Which word?")}]}]
        turn = "<think>dark</think><code>```python\nprint(1)\n```</code>"
        feedback = [{"type": "image", "image": image}, {"type": "text", "text": "<information> ok </information>"}]
        prompt_ids = processor.apply_chat_template([prompt], add_generation_prompt=True, tokenize=True)[0]
        turn_ids = processor.tokenizer(turn, add_special_tokens=False)["input_ids"]
        assert turn_ids[-1] in trainer.eos_token_ids  # generation stops right after the action
        suffix = trainer._get_tool_suffix_ids([{"role": "tool", "name": "code", "content": feedback}])
        rendered = processor.apply_chat_template(
            [prompt + [{"role": "assistant", "content": [{"type": "text", "text": turn}]},
                       {"role": "user", "content": feedback}]], add_generation_prompt=True, tokenize=True)[0]
        assert prompt_ids + turn_ids + suffix == rendered
    finally:
        setup.close()


def _episode_completion(code_ok: bool) -> list[dict]:
    call = {"type": "function", "function": {"name": "code", "arguments": {"argument": "```python\nx = 1\n```"}}}
    problem = {"type": "function", "function": {"name": "problem", "arguments": {"argument": "{'dark'}"}}}
    return [{"role": "assistant", "content": "<think>dark</think>", "tool_calls": [problem]},
            {"role": "tool", "name": "problem", "content": protocol.tips_for(["dark"])},
            {"role": "assistant", "content": "<think>fix</think>", "tool_calls": [call]},
            {"role": "tool", "name": "code", "content": "<information> ran </information>"},
            {"role": "assistant", "content": "<think>clear</think><answer>CAT</answer>"}]


class _Env:
    def __init__(self, code_ok):
        self.code_ok, self.last_output_image = code_ok, None


def test_episode_rewards_judge_the_whole_episode():
    spec = RewardSpec(code_constant=0.0, code_ran=1.0)
    funcs, weights = component_rewards(spec, mode="episodes", protocol_name="tags")
    names = [f.__name__ for f in funcs]
    assert names == ["format", "answer_f1", "problem", "search_similarity", "code_ran"] and weights[0] == 1.0
    completions = [_episode_completion(True), _episode_completion(False), [{"role": "assistant", "content": "x"}]]
    columns = {"gt": [["cat"]] * 3, "problem_labels": [["dark"]] * 3, "environments": [_Env(True), _Env(False),
                                                                                       _Env(None)]}
    scores = {f.__name__: f(completions=completions, **columns) for f in funcs}
    assert scores["format"] == [1.0, 1.0, 0.0]
    assert scores["answer_f1"] == [1.0, 1.0, 0.0]
    assert scores["problem"] == [1.0, 1.0, 0.0]
    assert scores["code_ran"] == [1.0, 0.0, None]
    assert scores["search_similarity"] == [None, None, None]


def test_code_rewards_do_not_apply_to_items_that_need_no_code():
    """On a clean image (gold problem `none`) the paper's trajectory has no code step: code earns nothing."""
    funcs, _ = component_rewards(RewardSpec(code_ran=1.0), mode="episodes", protocol_name="tags")
    by_name = {f.__name__: f for f in funcs}
    completions = [_episode_completion(True)] * 3
    columns = {"gt": [["cat"]] * 3, "problem_labels": [["none"], ["dark"], None],
               "environments": [_Env(True)] * 3}
    assert by_name["code_constant"](completions=completions, **columns) == [None, 0.9, 0.9]
    assert by_name["code_ran"](completions=completions, **columns) == [None, 1.0, 1.0]
    assert by_name["format"](completions=completions, **columns) == [1.0, 1.0, 1.0]


def test_group_std_is_the_mean_within_group_spread():
    assert group_std([1.0, 1.0, 0.0, 2.0], 2) == pytest.approx(0.7071, abs=1e-4)
    assert group_std([float("nan")] * 4, 2) is None


def test_rollout_becomes_a_trace_with_tool_call_and_images(store):
    image, output = Image.new("RGB", (40, 40), (1, 2, 3)), Image.new("RGB", (40, 40), (200, 2, 3))
    completion = _episode_completion(True)
    completion[3]["content"] = [{"type": "image", "image": output},
                                {"type": "text", "text": "<information> ran </information>"}]
    records = [ToolCall("problem", "{'dark'}", "tips"),
               ToolCall("code", "```python\nx = 1\n```", "", output_files=["/gone/out.jpg"])]
    snapshot = RolloutSnapshot(
        prompt=[{"role": "system", "content": [{"type": "text", "text": "sys"}]},
                {"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "<query> Which word? </query>"}]}],
        completion=completion, rewards={"format": 1.0, "answer_f1": 0.5, "problem": float("nan")}, advantage=0.7,
        step=3, group=1, sample_index=2, item_id="7", gold=["CAT"], tool_records=records)
    trace = build_trace(store, snapshot, run_id="r1", weights={"format": 1.0, "answer_f1": 2.0}, protocol_name="tags",
                        mode="episodes")
    store.save_traces([trace])
    saved = store.get_trace(trace.id)
    assert saved.question == "Which word?" and saved.final_answer == "CAT" and saved.stop_reason == "answered"
    assert [t.action for t in saved.turns] == ["problem", "code", "answer"]
    assert saved.turns[0].feedback.startswith("<tips>") and saved.turns[0].tool_call is None
    call = saved.turns[1].tool_call
    assert call.name == "code" and call.ok and len(call.output_images) == 1
    assert store.get_image(call.output_images[0]) is not None and store.get_image(saved.images[0]) is not None
    assert saved.rewards == {"format": 1.0, "answer_f1": 0.5, "total": 2.0}
    assert (saved.group_id, saved.sample_index, saved.step, saved.advantage) == ("r1:step3:7", 2, 3, 0.7)


def test_sft_conversation_trains_only_the_assistant_turns(demo, store, tags_processor):
    from trl.data_utils import prepare_multimodal_messages

    from trainers.sft_data import collect_traces, conversation

    config = SftJobConfig(trace_runs=[demo.expert_run])
    sources = collect_traces(config, store)
    assert len(sources) == 8
    source = next(s for s in sources if any(t.tool_call for t in s.trace.turns))
    messages, images = conversation(source, protocol.system_prompt(("code",), "tags"))
    assert len(images) == 2  # the input image and the code tool's output image
    filled = prepare_multimodal_messages(messages, images=[Image.open(p).convert("RGB") for p in images])
    out = tags_processor.apply_chat_template([filled], tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True, return_tensors="pt")
    trained = tags_processor.tokenizer.decode(out["input_ids"][0][out["assistant_masks"][0].bool()])
    expected = "".join(turn.raw + "<|im_end|>" for turn in source.trace.turns)
    assert trained == expected


def test_sft_rows_keep_the_system_prompt_each_trace_was_recorded_with(demo, store):
    # Training every trace under one tool list and asking with another broke the demo model's second turn.
    from trainers.sft_data import collect_traces, conversation, recorded_system_prompt

    source = collect_traces(SftJobConfig(trace_runs=[demo.expert_run]), store)[0]
    recorded = protocol.system_prompt(("code",), "tags")
    assert recorded_system_prompt(source.trace) == recorded
    messages, _ = conversation(source, lambda trace: recorded_system_prompt(trace) or "job default")
    assert messages[0]["content"][0]["text"] == recorded
    source.trace.messages = source.trace.messages[1:]
    messages, _ = conversation(source, lambda trace: recorded_system_prompt(trace) or "job default")
    assert messages[0]["content"][0]["text"] == "job default"


def test_native_protocol_parses_tool_calls_and_runs_the_environment_tool(demo, tmp_path):
    from trainers.grpo import build_grpo_trainer

    config = GrpoJobConfig(model="tiny-qwen3-vl", data_files=[str(demo.items_file)], mode="episodes",
                           tools=["code"], protocol="native", num_generations=2, per_device_train_batch_size=2,
                           max_completion_length=32, max_steps=1, max_pixels=64 * 64)
    setup = build_grpo_trainer(config, tmp_path / "out", with_logging=False)
    try:
        trainer = setup.trainer
        tokenizer = trainer.processing_class.tokenizer
        code = "```python\nimport cv2\nimg = cv2.imread('path_to_input_image.jpg')\n" \
               "cv2.imwrite('path_to_output_image.jpg', img[::-1])\n```"
        text = ('<think>upside down</think><tool_call>\n{"name": "code", "arguments": {"code": '
                + json.dumps(code) + '}}\n</tool_call><|im_end|>')
        parsed = tokenizer.parse_response(tokenizer(text)["input_ids"], prefix="<|im_start|>assistant\n")
        call = parsed["tool_calls"][0]["function"]
        assert call["name"] == "code" and call["arguments"] == {"code": code}
        environment = trainer._environment_pool[None][0]
        item = data.load_episode_items([str(demo.items_file)])[0]
        environment.reset(question=item.question, image_file=item.image_file)
        result = getattr(environment, call["name"])(**call["arguments"])
        assert isinstance(result, list) and isinstance(result[0]["image"], Image.Image)
        assert environment.code_ok is True and environment.tool_calls[0].output_files
        prompt = trainer.processing_class.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": "q"}]}], tools=trainer.tools, tokenize=False)
        assert "# Tools" in prompt and protocol.tool_schemas(("code",))[0]["function"]["description"] in prompt
        trainer.train()  # one real step on the native path
        assert trainer.state.global_step == 1
    finally:
        setup.close()


def test_native_sft_rows_render_exactly_like_tool_messages(store):
    from trainers.sft_data import TraceSource, _store_image, conversation
    from workbench.trace import ToolCall, Trace, Turn

    processor = modeling.load_processor(modeling.resolve_model_path("tiny-qwen3-vl"),
                                        SftJobConfig(trace_runs=["x"]), padding_side="right")
    question_image, output_image = Image.new("RGB", (48, 48), (9, 9, 9)), Image.new("RGB", (48, 48), (99, 9, 9))
    shas = [store.put_image(question_image), store.put_image(output_image)]
    call_text = '<think>dark</think><tool_call>\n{"name": "code", "arguments": {"code": "x"}}\n</tool_call>'
    trace = Trace(question="Which word?", images=[shas[0]], protocol="native", stop_reason="answered", turns=[
        Turn(0, call_text, action="code", tool_call=ToolCall("code", "x", "<information> ok </information>",
                                                            output_images=[shas[1]]),
             feedback="<information> ok </information>"),
        Turn(1, "<think>clear</think><answer>CAT</answer>", action="answer")])
    system = chat_format.system_prompt_with_tools(processor, protocol.system_prompt(("code",), "native"), ("code",),
                                                  "native")
    assert "# Tools" in system
    messages, images = conversation(TraceSource(trace, _store_image), system)
    from trl.data_utils import prepare_multimodal_messages

    sft_text = processor.apply_chat_template(
        [prepare_multimodal_messages(messages, images=[question_image, output_image])], tokenize=False)[0]
    chat = [{"role": "system", "content": [{"type": "text", "text": protocol.system_prompt(("code",), "native")}]},
            {"role": "user", "content": [{"type": "image", "image": question_image},
                                         {"type": "text", "text": protocol.query_text("Which word?")}]},
            {"role": "assistant", "content": [{"type": "text", "text": call_text}]},
            {"role": "tool", "content": [{"type": "image", "image": output_image},
                                         {"type": "text", "text": "<information> ok </information>"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "<think>clear</think><answer>CAT</answer>"}]}]
    rendered = processor.apply_chat_template([chat], tools=protocol.tool_schemas(("code",)), tokenize=False)[0]
    assert sft_text == rendered and len(images) == 2


def test_each_row_searches_its_own_worlds_corpus(tmp_path, monkeypatch):
    from trainers import tool_env
    from workbench.benchmarks import mat_search_mini

    questions, _ = mat_search_mini.generate(tmp_path / "drill", 4, seed=4000, worlds=2)
    records = json.loads(questions.read_text())
    items = data.load_episode_items([str(questions)])
    assert [Path(i.search_corpus).name for i in items] == ["corpus_0.jsonl", "corpus_1.jsonl"] * 2
    monkeypatch.setattr(tool_env, "CORPUS_TOOLS_KEPT", 1)
    toolbox = tool_env.ToolBox(("search",))
    try:
        environment = tool_env.environment_factory(toolbox, "tags")()
        for position, (item, record) in enumerate(zip(items, records)):
            environment.reset(question=item.question, image_file=item.image_file, search_corpus=item.search_corpus)
            found = environment.search(f"{record['company']} company")
            other_world = records[1 - position % 2]
            assert record["company"] in found and other_world["company"] not in found
            assert len(toolbox.corpus_tools) == 1  # only the most recent corpus keeps its search tool
        environment.reset(question="q", image_file=item.image_file)
        assert "give the job search_corpus or the rows a corpus field" in environment.search("anything")
        assert environment.tool_calls[-1].ok is False
    finally:
        toolbox.close()


def test_the_job_row_says_what_training_is_doing_phase_by_phase(store, tmp_path):
    run_id = store.create_run("notes", "train", status="running")
    job_id = store.create_job("grpo", {}, ["python"], log_path=str(tmp_path / "j.log"), run_id=run_id)
    callback = StoreLoggingCallback(store, run_id, job_id=job_id, max_steps=4)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[])
    state, control = TrainerState(max_steps=4), TrainerControl()
    callback.on_train_begin(args, state, control)

    def note() -> str:
        callback._writer.flush()
        return store.get_job(job_id)["note"]

    batches = [object()] * 5  # 10 held-out samples in batches of 2
    callback.on_prediction_step(args, state, control, eval_dataloader=batches)
    assert note() == "step-0 evaluation: 2/10 held-out samples"
    callback._noted_at = 0.0  # past the rate limit
    callback.on_prediction_step(args, state, control, eval_dataloader=batches)
    assert note() == "step-0 evaluation: 4/10 held-out samples"
    callback.on_evaluate(args, state, control)
    assert note() == "training: step 0 of 4"
    for step in (1, 2):
        state.global_step = step
        callback.on_step_begin(args, state, control)
        callback.on_step_end(args, state, control)
    assert re.fullmatch(r"training: step 2 of 4 · \d+\.\d s/step · about \d+ s left", note())
    control.should_save = True
    callback.on_step_end(args, state, control)
    assert note() == "saving a checkpoint at step 2"
    state.global_step = 4
    callback.on_prediction_step(args, state, control, eval_dataloader=batches)
    assert note() == "final evaluation: 2/10 held-out samples"
    callback.close()
