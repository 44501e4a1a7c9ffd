"""The batched decode loop behind prefix KV reuse (workbench.backends.kv_reuse).

`model.generate` keeps computing a row after it has ended (feeding it pad
tokens) until the batch's longest row ends: with agent turns of very
different lengths that was a fifth of all decode work. `Decoder` owns a
decode loop that drops a row from the batch as soon as it ends: its
key/values are handed back (for the next turn's prefix) and the cache rows,
attention mask and positions of the rows still going are reordered (the last
live rows move into the holes, so leaving costs a copy of one row each).

Token choice is `generate`'s own: its logits processors (built by the
model's `_get_logits_processor` from the same generation config: temperature,
top_p, top_k, repetition penalty, ...), argmax when greedy, and
`torch.multinomial` over the softmax when sampling. Processors, sampling and
stopping criteria (eos ids, max_new_tokens, StopStringCriteria) always see
the whole batch, as in `generate`: an ended row's scores are zeros and its
token is pad. So the random draws per step are the same as `generate`'s for
the same seed and batch, and a live row gets the same token whenever its
logits are the same. Those logits come from a smaller batch after rows have
left; matrix kernels may sum in another order for another batch size (not
seen on CPU in the tests, which compare greedy and seeded sampling token for
token with `generate` without reuse), so bit-identity across batch sizes is
expected, not guaranteed.

`RoomyLayer` is the cache layer the loop appends into: spare room instead of
DynamicLayer's concatenation per token, and rows moved within the buffer.
"""

import copy
from collections.abc import Callable
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

from workbench.versions import require_private_api


class Decoder:
    """One batch's decode: from left-padded prompts whose key/values are cached up to their last token."""

    def __init__(self, model: Any, generation_config: Any, stopping_criteria: Any, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor):
        self.model = model
        self.config = copy.deepcopy(generation_config)  # preparing special tokens writes tensors into it
        device = input_ids.device
        # private generate helpers, so the tokens are chosen exactly as generate chooses them
        require_private_api("transformers", model, "_prepare_special_tokens", "_get_logits_processor")
        model._prepare_special_tokens(self.config, True, device=device)
        self.processors = model._get_logits_processor(self.config, input_ids_seq_length=input_ids.shape[1],
                                                      device=device, model_kwargs={"attention_mask": attention_mask})
        self.criteria = stopping_criteria
        self.input_ids = input_ids
        self.attention_mask = attention_mask

    def run(self, cache: Any, position_ids: torch.Tensor,
            on_finished: Callable[[int, torch.Tensor, list], None]) -> torch.Tensor:
        """Decode until every row ended; returns the sequences as `generate` does.

        `on_finished(row, generated, layers)` receives each row as it leaves the
        batch: its generated tokens that have key/values (all but the last) and
        per layer its (keys, values) of [heads, tokens, dim] without left padding.
        """
        config, device = self.config, self.input_ids.device
        if config.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        eos, pad = self.config._eos_token_tensor, self.config._pad_token_tensor
        batch, prompt_length = self.input_ids.shape
        sequences = self.input_ids
        unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)  # which batch row each cache row holds
        step_ids = self.input_ids[:, -1:]  # the last prompt token is fed first: its logits start generation
        positions = position_ids[..., -1:]
        mask = self.attention_mask
        for step in range(config.max_new_tokens):
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions, cache=cache,
                                use_cache=True).logits[:, -1].float()
            # ended rows score zeros (generate scores their pad tokens): each row is processed on its own
            scores = logits.new_zeros(batch, logits.shape[-1])
            scores[rows] = logits
            scores = self.processors(sequences, scores)
            if config.do_sample:
                tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                tokens = torch.argmax(scores, dim=-1)
            tokens = torch.where(unfinished, tokens, pad)
            sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
            ended = torch.isin(tokens, eos) if eos is not None else torch.zeros_like(unfinished)
            if self.criteria is not None:
                ended |= self.criteria(sequences, scores)
            unfinished &= ~ended
            if step + 1 == config.max_new_tokens or not unfinished.any():
                break
            keep = unfinished[rows]
            if not keep.all():
                self._hand_back(cache, rows, ~keep, sequences, prompt_length, on_finished)
                # fill the holes with the last live rows: copies one row per leaver, not the whole cache
                count = int(keep.sum())
                holes = (~keep[:count]).nonzero().squeeze(1)
                movers = keep[count:].nonzero().squeeze(1) + count
                for layer in cache.layers:
                    layer.move_rows(movers, holes, count)
                order = torch.arange(count, device=device)
                order[holes] = movers
                rows, mask, positions = rows[order], mask[order], positions[:, order]
            step_ids = tokens[rows][:, None]
            positions = positions + 1
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
        self._hand_back(cache, rows, torch.ones_like(rows, dtype=torch.bool), sequences, prompt_length, on_finished)
        return sequences

    def _hand_back(self, cache: Any, rows: torch.Tensor, leaving: torch.Tensor, sequences: torch.Tensor,
                   prompt_length: int, on_finished: Callable) -> None:
        length = cache.get_seq_length()  # key/values so far: the prompt, then the tokens fed back
        for cache_row in leaving.nonzero().squeeze(1).tolist():
            row = int(rows[cache_row])
            padding = int((self.attention_mask[row] == 0).sum())
            on_finished(row, sequences[row, prompt_length:length],
                        [(layer.keys[cache_row, :, padding:].clone(), layer.values[cache_row, :, padding:].clone())
                         for layer in cache.layers])


class RoomyLayer(DynamicLayer):
    """A DynamicLayer that appends into spare room rather than concatenating.

    DynamicLayer copies the whole cache into a new tensor at every decoded
    token; for a batch of long prompts that copying took a third of decode
    time. Here `keys`/`values` are views of a larger buffer that grows by
    doubling when full, and rows leave by having others moved into their place.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        self._keys, self._values = keys, values
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._keys, self._values = _grown(self._keys, end), _grown(self._values, end)
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def move_rows(self, sources: torch.Tensor, targets: torch.Tensor, count: int) -> None:
        """Copy rows `sources` over rows `targets`, then keep the first `count` rows (in the same buffer)."""
        length = self.keys.shape[-2]
        self._keys[targets, :, :length] = self._keys[sources, :, :length]
        self._values[targets, :, :length] = self._values[sources, :, :length]
        self._keys, self._values = self._keys[:count], self._values[:count]
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]


def _grown(buffer: torch.Tensor, needed: int) -> torch.Tensor:
    shape = list(buffer.shape)
    shape[-2] = max(needed, 2 * shape[-2])
    grown = buffer.new_empty(shape)  # the new room is written before it is read
    grown[:, :, :buffer.shape[-2]] = buffer
    return grown
