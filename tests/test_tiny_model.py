"""The embedded tiny model: seeded builds, tokenizer contents, chat template, Auto* reload, atomic ensure."""

import hashlib
import importlib.resources
import os
import time

import pytest
from PIL import Image

from workbench import settings
from workbench.backends.tiny import (
    PROTOCOL_TAGS,
    QWEN3_VL_CHAT_TEMPLATE,
    QWEN_SPECIAL_TOKENS,
    build_tiny_model,
    ensure_tiny_model,
    tiny_model_dir,
)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True)
    return processor, model


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tiny_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert _sha(again / name) == _sha(tiny_dir / name), name
    assert _sha(other / "model.safetensors") != _sha(tiny_dir / "model.safetensors")


def test_reloads_through_auto_classes_as_a_small_qwen25_vl(loaded):
    processor, model = loaded
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    parameters = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < parameters < 10_000_000
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        256, 4, 4, 2)
    assert model.config.vision_config.depth == 2 and model.config.vision_config.hidden_size == 128
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_tokenizer_has_qwen_special_tokens_and_protocol_tags_as_single_tokens(loaded):
    tokenizer = loaded[0].tokenizer
    special = set(tokenizer.all_special_tokens)
    for token in QWEN_SPECIAL_TOKENS:
        assert token in special, token
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    for tag in PROTOCOL_TAGS:
        assert tag not in special, tag
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    text = "<think> the image is dark </think><code>\n```python\nimage = cv2.imread('x.jpg')\n```\n</code>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # tags survive special-token skipping
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_is_the_qwen3_vl_one_trl_recognises_and_renders_tools_and_images(loaded):
    trl_template = importlib.resources.files("trl") / "chat_templates" / "qwen3_vl.jinja"
    assert trl_template.read_text(encoding="utf-8") == QWEN3_VL_CHAT_TEMPLATE
    processor = loaded[0]
    assert processor.chat_template == QWEN3_VL_CHAT_TEMPLATE
    tools = [{"type": "function", "function": {"name": "search", "description": "Web search.", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]
    conversation = [
        {"role": "system", "content": "You answer questions about images."},
        {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Who?"}]},
        {"role": "assistant", "content": "<think>search</think>",
         "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "tower"}}}]},
        {"role": "tool", "content": [{"type": "image", "image": "b.png"}, {"type": "text", "text": "1. Content: x"}]},
    ]
    rendered = processor.apply_chat_template(conversation, tools=tools, tokenize=False, add_generation_prompt=True)
    assert rendered.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert '"name": "search"' in rendered and "<tools>" in rendered
    assert '<tool_call>\n{"name": "search", "arguments": {"query": "tower"}}\n</tool_call>' in rendered
    assert "<tool_response>\n" in rendered and rendered.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("size", [(112, 112), (640, 480), (1000, 200), (4000, 3000)])
def test_images_cost_at_most_16_tokens(loaded, size):
    processor = loaded[0]
    grid = processor.image_processor(images=[Image.new("RGB", size)], return_tensors="pt")["image_grid_thw"][0]
    tokens = int(grid.prod()) // 4  # 2x2 patches merge into one token
    assert 4 <= tokens <= 16
    if size in ((112, 112), (640, 480)):
        assert tokens >= 9  # ordinary photos get 9-16 tokens


def test_qwen3_vl_builds_reloads_and_generates_with_an_image(tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = build_tiny_model(tmp_path / "q3", arch="qwen3_vl", seed=3)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert processor.image_processor.patch_size == 16
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (90, 60), "red")], return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_unknown_arch_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        build_tiny_model(tmp_path / "x", arch="llama")
    with pytest.raises(ValueError, match="qwen3_vl"):
        ensure_tiny_model("llama")


def test_ensure_builds_once_into_models_dir_and_cleans_killed_builds():
    stale = settings.models_dir() / ".tiny-qwen2_5_vl-killed"
    (stale / "half").mkdir(parents=True)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    path = ensure_tiny_model()
    assert path == tiny_model_dir() == settings.models_dir() / "tiny-qwen2_5_vl"
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert not stale.exists()
    assert [p.name for p in settings.models_dir().iterdir()] == ["tiny-qwen2_5_vl"]
    built_at = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model() == path
    assert (path / "model.safetensors").stat().st_mtime_ns == built_at


def test_a_failed_build_leaves_nothing_behind(monkeypatch):
    import workbench.backends.tiny as tiny_model

    def dies_half_way(out_dir, *, arch, seed=0):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # what a killed build looks like from inside

    monkeypatch.setattr(tiny_model, "build_tiny_model", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ensure_tiny_model()
    assert list(settings.models_dir().iterdir()) == []
