"""Stopping a training rollout at its action's closing tag, on any tokenizer.

Owns `ActionStops`: the closing tags of a protocol (`</search>`, `</code>`,
`</problem>`, `</answer>`) as stops for TRL's generation paths.
- Tags that are single tokens (the tiny model adds them to its vocabulary)
  become extra end-of-sequence ids: cheapest, and TRL then treats them as
  the end of the completion.
- Tags that span tokens (a real Qwen vocabulary splits `</code>` into
  `'</','code','>'`, and merges `)</` after code) stop as strings: transformers'
  `StopStringCriteria` in the transformers path, vLLM's `stop` sampling
  parameter under vLLM; `cut` then trims each completion right after the
  token that completed the tag, as the inference backends trim text.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from trainers.chat_format import ACTION_CLOSE_TAGS


class ActionStops:
    """The action close tags of `protocol_name` for `tokenizer` (see the module docstring)."""

    def __init__(self, tokenizer: Any, protocol_name: str):
        self.tokenizer = tokenizer
        self.strings = list(ACTION_CLOSE_TAGS[protocol_name])
        single = [self._single_token_id(tag) for tag in self.strings]
        # One multi-token tag is enough to need string matching for all (one mechanism per run).
        self.token_ids = [i for i in single if i is not None] if all(i is not None for i in single) else []
        self._criteria = None

    def _single_token_id(self, tag: str) -> int | None:
        ids = self.tokenizer.encode(tag, add_special_tokens=False)
        return ids[0] if len(ids) == 1 and self.tokenizer.decode(ids) == tag else None

    @property
    def by_string(self) -> bool:
        """Whether the tags stop as strings (some tag spans several tokens)."""
        return bool(self.strings) and not self.token_ids

    def criteria(self):
        """transformers stopping criteria for the string stops (built once: building scans the vocabulary)."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        if self._criteria is None:
            self._criteria = StoppingCriteriaList([StopStringCriteria(self.tokenizer, self.strings)])
        return self._criteria

    def stop_end(self, ids: list[int]) -> int | None:
        """Number of leading tokens of `ids` up to and including the one that completes the first tag (None: none).

        Decoded text only grows as tokens are added (tags are ASCII, so a cut
        multi-byte character cannot hide one), so the first prefix that
        contains a tag is found by bisection: a few decodes per completion.
        """
        if not self.strings or not self._contains_stop(ids):
            return None
        low, high = 1, len(ids)
        while low < high:
            middle = (low + high) // 2
            if self._contains_stop(ids[:middle]):
                high = middle
            else:
                low = middle + 1
        return low

    def _contains_stop(self, ids: list[int]) -> bool:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return any(stop in text for stop in self.strings)

    def cut(self, completion_ids: list[list[int]], logprobs: list[list[float]] | None = None):
        """Trim every completion after the token that completed its first tag; (ids, logprobs, stopped flags)."""
        trimmed, trimmed_logprobs, stopped = [], None if logprobs is None else [], []
        for row, ids in enumerate(completion_ids):
            end = self.stop_end(list(ids))
            stopped.append(end is not None)
            keep = len(ids) if end is None else end
            trimmed.append(list(ids[:keep]))
            if trimmed_logprobs is not None:
                trimmed_logprobs.append(list(logprobs[row][:keep]))
        return trimmed, trimmed_logprobs, stopped


def vllm_stop_kwargs(protocol_name: str) -> dict[str, Any]:
    """vLLM SamplingParams fields that stop at the tags and keep them in the output (TRL's parser reads them).

    >>> vllm_stop_kwargs("tags")["stop"]
    ['</search>', '</code>', '</problem>', '</answer>']
    >>> vllm_stop_kwargs("native")
    {}
    """
    tags = list(ACTION_CLOSE_TAGS[protocol_name])
    return {"stop": tags, "include_stop_str_in_output": True} if tags else {}


@contextmanager
def generate_with_criteria(model: Any, criteria: Any) -> Iterator[None]:
    """Let `model.generate` use `criteria` for the duration (TRL's call passes only a GenerationConfig).

    The generation config cannot carry stopping criteria objects, and string
    stops in it need a tokenizer argument TRL does not pass; so the bound
    `generate` of this one model object gets them, and is restored after.
    """
    original = model.__dict__.get("generate")
    bound = model.generate

    def generate(*args, **kwargs):
        kwargs.setdefault("stopping_criteria", criteria)
        return bound(*args, **kwargs)

    model.generate = generate
    try:
        yield
    finally:
        if original is None:
            del model.generate
        else:
            model.generate = original
