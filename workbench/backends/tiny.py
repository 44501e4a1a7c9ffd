"""The embedded tiny model: a few-million-parameter Qwen-VL built offline.

Owns `build_tiny_model` (config + seeded random weights + a locally trained
byte-level BPE tokenizer + image/video processors, all saved with
save_pretrained so the folder loads through AutoProcessor /
AutoModelForImageTextToText exactly like a hub checkpoint) and
`ensure_tiny_model` (build once into settings.models_dir(), atomically).

The weights are random: the model is for exercising the full pipeline
(batching, images, tools, LoRA, GRPO) on a CPU, not for good answers.
The chat template is the Qwen3-VL one, byte for byte, because TRL recognises
templates by exact text and only the Qwen3-VL one supports tool calling.
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

ARCHES = ("qwen2_5_vl", "qwen3_vl")
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112
TOKENIZER_VOCAB_SIZE = 1024  # upper bound: the built-in text yields ~750 tokens + added ones

# Qwen's own special tokens, in Qwen's order (ids differ: our vocabulary is tiny).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Protocol tags: ordinary added tokens (kept when decoding with skip_special_tokens).
PROTOCOL_TAGS = [
    f"<{slash}{name}>"
    for name in ("think", "search", "problem", "code", "answer", "information", "tips", "query",
                 "tool_call", "tool_response")
    for slash in ("", "/")
]

# The Qwen3-VL instruct chat template (public, Apache-2.0), verbatim: supports
# system/user/assistant/tool roles, image and video blocks, `tools=` and `tool_calls`.
QWEN3_VL_CHAT_TEMPLATE = (Path(__file__).parent / "qwen3_vl_chat_template.jinja").read_text(encoding="utf-8")
# A little text in the protocol's language; the tokenizer's merges come from it.
_TRAINING_TEXT = (Path(__file__).parent / "tiny_tokenizer_text.txt").read_text(encoding="utf-8")


def _train_tokenizer(extra_text: str = "", vocab_size: int = TOKENIZER_VOCAB_SIZE):
    """Byte-level BPE trained on the built-in text (plus `extra_text`), wrapped as Qwen2Tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator((_TRAINING_TEXT + extra_text).splitlines(keepends=True), trainer)
    model_state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model_state["vocab"], merges=merges, unk_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=32768)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS]})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in PROTOCOL_TAGS])
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    return tokenizer


def _configs(arch: str, tokenizer):
    """Model config of the given architecture sized as FIELD-NOTES describes."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in QWEN_SPECIAL_TOKENS}
    vocab_size = -(-len(tokenizer) // 64) * 64  # round up: friendlier matmul shapes
    text = dict(vocab_size=vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if arch == "qwen2_5_vl":
        # mrope sections (temporal, height, width) must sum to head_dim / 2 = 32.
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]}
        vision = dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    text.update(head_dim=64, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                              "mrope_section": [12, 10, 10], "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256,
                  deepstack_visual_indexes=[1])
    return Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)


def _processor(arch: str, tokenizer):
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    if arch == "qwen2_5_vl":
        image_processor = Qwen2VLImageProcessor(size=size)
        return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   video_processor=Qwen2VLVideoProcessor(size=size),
                                   chat_template=QWEN3_VL_CHAT_TEMPLATE)
    half = [0.5, 0.5, 0.5]  # Qwen3-VL normalises with mean/std 0.5 and 16-pixel patches
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=16, image_mean=half, image_std=half)
    # videos: a few frames per clip still fit a small budget
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS * 4},
                                            patch_size=16, image_mean=half, image_std=half)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=QWEN3_VL_CHAT_TEMPLATE)


def build_tiny_model(out_dir: Path, *, arch: str = "qwen2_5_vl", seed: int = 0, tokenizer_text: str = "",
                     vocab_size: int = TOKENIZER_VOCAB_SIZE, tokenizer: Any = None) -> Path:
    """Build and save a tiny random-weight Qwen-VL of `arch` into `out_dir`; same arguments, same bytes.

    `tokenizer_text` is extra text for the tokenizer to learn (with a larger
    `vocab_size`, the words of a domain become few tokens: the demo model's
    tokenizer learns the demo world this way, so copying a name is a few tokens).
    `tokenizer`: use this one instead (it must hold QWEN_SPECIAL_TOKENS), e.g.
    one with Qwen's real vocabulary, whose tags span several tokens.
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    if arch not in ARCHES:
        raise ValueError(f"unknown tiny-model arch {arch!r}; use one of {', '.join(ARCHES)}")
    out_dir = Path(out_dir)
    tokenizer = tokenizer if tokenizer is not None else _train_tokenizer(tokenizer_text, vocab_size)
    config = _configs(arch, tokenizer)
    with torch.random.fork_rng(devices=[]):  # seed locally; leave the caller's RNG alone
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    model.generation_config = GenerationConfig(eos_token_id=[im_end, endoftext], pad_token_id=endoftext,
                                               bos_token_id=endoftext, do_sample=False)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    _processor(arch, tokenizer).save_pretrained(out_dir)
    return out_dir


def tiny_model_dir(arch: str = "qwen2_5_vl") -> Path:
    """Where ensure_tiny_model keeps the tiny model of `arch`."""
    from workbench import settings

    return settings.models_dir() / f"tiny-{arch}"


def ensure_tiny_model(arch: str = "qwen2_5_vl") -> Path:
    """The tiny model folder, built on first use (in a temp folder, then renamed into place)."""
    if arch not in ARCHES:
        raise ValueError(f"unknown tiny-model arch {arch!r}; use one of {', '.join(ARCHES)}")
    target = tiny_model_dir(arch)
    if (target / "config.json").is_file():
        return target
    _remove_stale_staging(target.parent, arch)
    staging = Path(tempfile.mkdtemp(prefix=f".tiny-{arch}-", dir=target.parent))
    try:
        build_tiny_model(staging, arch=arch)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished first (target now exists and is complete).
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove_stale_staging(folder: Path, arch: str, older_than_s: float = 600) -> None:
    """Drop staging folders left by killed builds (young ones may belong to a build in progress)."""
    now = time.time()
    for leftover in folder.glob(f".tiny-{arch}-*"):
        try:
            if now - leftover.stat().st_mtime > older_than_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except FileNotFoundError:
            continue
