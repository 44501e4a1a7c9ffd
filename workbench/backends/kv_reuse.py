"""Prefix KV-cache reuse across agent turns, for `TransformersBackend`.

An agent conversation only grows: the next turn's prompt is the previous
prompt, the assistant's text and the tool result (maybe with a new image).
Re-prefilling it from scratch every turn costs compute that batching does not
amortise, so this module keeps each row's key/values and prefills only what
is new. It owns:

- `PrefixCache`: the store, an LRU bounded by bytes of key/values. An entry is
  token ids (prompt + generated) with the fingerprints of the images among
  them and one (keys, values) pair per layer. A row's new entry replaces its
  previous turn's, so there is about one entry per conversation; those of
  finished episodes age out first because live ones are used every turn
  (and meanwhile serve the next sample of the same question).
- `KVReuse.generate`: one batch in two phases.
  1. Prefill, row by row: take the longest usable cached prefix of the row's
     token ids (checked token by token; an image counts only if its pixels
     are the same, and a prefix never ends inside an image), then run the
     model over the rest of the prompt except its last token, with the row's
     own multimodal rope positions and the pixels of only the images in that
     part. Each prefill is stored at once, so the G samples of a question in
     one batch prefill their shared prompt once.
  2. Decode, batched: the rows' key/values, left-padded into one cache, and
     the decode loop of workbench.backends.kv_decode continuing from each row's last
     prompt token with explicit 3D positions. Leaving that one token to the
     loop gives it the logits to start from and makes the batch plain left
     padding, as without reuse. A row leaves the batch when it ends, and its
     prompt + generated key/values are stored then for its next turn.

A row with no usable prefix simply prefills all of its prompt (full prefill).
Greedy and seeded sampled outputs are token-identical to generation without
reuse in the tests (tests/test_kv_reuse.py compare against a backend with
reuse off; kv_decode's docstring says what is and is not guaranteed).
"""

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from workbench.backends.kv_decode import Decoder, RoomyLayer

# Tokens at the end of a prompt that the next turn's prompt may rewrite: end of turn + generation prompt
# ("<|im_end|>\n<|im_start|>assistant\n") and a token merged differently at the boundary, with margin.
PROMPT_CLOSING_TOKENS = 12
# Cache slots set aside per row for generated tokens before the buffer has to grow (by doubling).
DECODE_ROOM = 256


@dataclass
class Row:
    """One prompt ready for the model: token ids, rope positions and its images."""

    ids: torch.Tensor  # [n] token ids
    positions: torch.Tensor  # [3, n] multimodal rope positions (temporal, height, width)
    spans: list[tuple[int, int]]  # token span of each image, in order
    fingerprints: list[bytes]  # what each image's pixels hash to
    pixel_values: torch.Tensor | None  # patches of all images, concatenated
    pixel_rows: list[tuple[int, int]]  # each image's rows in pixel_values
    grids: torch.Tensor | None  # [images, 3] (t, h, w) patch grid of each image

    def __post_init__(self) -> None:
        self.ids_np = self.ids.cpu().numpy()


@dataclass
class Entry:
    """Cached key/values of a token sequence, one (keys, values) of [heads, tokens, dim] per layer."""

    ids: np.ndarray
    spans: list[tuple[int, int]]
    fingerprints: list[bytes]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    prompt_tokens: int  # how many of `ids` were prompt (the rest were generated)
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.nbytes = sum(k.nbytes + v.nbytes for k, v in self.layers) + self.ids.nbytes


def usable_prefix(row: Row, entry: Entry) -> int:
    """How many leading tokens of `row` `entry` holds valid key/values for.

    Token ids must match, and so must every image inside the prefix (the same
    number of image tokens can stand for other pixels). One token is always
    left over: generation needs an uncached input to produce logits.
    """
    limit = min(len(row.ids_np) - 1, len(entry.ids))
    differ = np.flatnonzero(row.ids_np[:limit] != entry.ids[:limit])
    length = int(differ[0]) if differ.size else limit
    for index, (start, end) in enumerate(row.spans):
        if start >= length:
            break
        # ids agree up to `length`, so this is also the entry's image number `index`
        if end > length or entry.fingerprints[index] != row.fingerprints[index]:
            return start  # never split an image; a different image means its tokens' KV differ
    return length


class PrefixCache:
    """Cached key/values by token prefix: an LRU bounded by `max_bytes`."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError("kv_cache_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[int, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def longest_prefix(self, row: Row) -> tuple[Entry | None, int]:
        """The entry covering the most leading tokens of `row`, and how many (0 if none)."""
        best, best_length = None, 0
        for entry in self._entries.values():
            length = usable_prefix(row, entry)
            if length > best_length:
                best, best_length = entry, length
        if best is not None:
            self._entries.move_to_end(id(best))
        return best, best_length

    def put(self, entry: Entry) -> None:
        if entry.nbytes > self.max_bytes:
            return
        self._entries[id(entry)] = entry
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def discard(self, entry: Entry | None) -> None:
        if entry is not None and self._entries.pop(id(entry), None) is not None:
            self.nbytes -= entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


def unsupported_reason(model: Any) -> str | None:
    """Why prefix reuse cannot run on `model` (None if it can)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not callable(getattr(getattr(inner, "model", None), "get_rope_index", None)):
        return f"{type(inner).__name__} has no Qwen-VL get_rope_index"
    layer_types = getattr(model.config.get_text_config(), "layer_types", None) or ["full_attention"]
    if any(kind != "full_attention" for kind in layer_types):
        return "sliding-window layers keep only part of the key/values"
    return None


class KVReuse:
    """Two-phase generation with prefix reuse for one model + processor (see the module docstring)."""

    def __init__(self, model: Any, processor: Any, max_bytes: int, device: str = "cpu"):
        self.model = model
        self.processor = processor
        self.device = device
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._rope_index: Callable = inner.model.get_rope_index
        self.image_token_id = model.config.image_token_id
        self.cache = PrefixCache(max_bytes)
        self.reused_tokens = 0  # counters, for tests and benchmarks
        self.prefilled_tokens = 0

    # -- preparing rows --------------------------------------------------------
    def prepare(self, text: str, images: list) -> Row:
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt").to(self.device)
        ids = inputs["input_ids"][0]
        kinds = inputs.get("mm_token_type_ids")  # 1 for image tokens; older processors leave it out
        kinds = (ids == self.image_token_id).long() if kinds is None else kinds[0]
        grids = inputs.get("image_grid_thw")
        pixel_values = inputs.get("pixel_values")
        spans = _runs(kinds.tolist())
        if grids is None or not spans:
            positions = torch.arange(len(ids), device=self.device).expand(3, -1)
            return Row(ids, positions, [], [], None, [], None)
        positions, _ = self._rope_index(ids[None], mm_token_type_ids=kinds[None], image_grid_thw=grids)
        sizes = grids.prod(dim=-1).tolist()
        ends = np.cumsum(sizes).tolist()
        pixel_rows = [(end - size, end) for size, end in zip(sizes, ends)]
        fingerprints = [_fingerprint(pixel_values[start:end], grid) for (start, end), grid in zip(pixel_rows, grids)]
        return Row(ids, positions[:, 0], spans, fingerprints, pixel_values, pixel_rows, grids)

    # -- one batch -------------------------------------------------------------
    def generate(self, rows: list[Row], pad_id: int, generation_config: Any,
                 stopping_criteria: Any = None) -> torch.Tensor:
        """Generate for `rows` reusing cached prefixes; returns sequences like `model.generate`
        (prompts left-padded to one length, then the new tokens, pad after a row's end)."""
        pasts, used = [], []
        for row in rows:
            source, length = self.cache.longest_prefix(row)
            layers = [(k[:, :length], v[:, :length]) for k, v in source.layers] if source else None
            past, fresh = self._prefill(row, length, layers)
            self.reused_tokens += length
            self.prefilled_tokens += len(row.ids) - 1 - length
            if fresh is not None:
                self.cache.put(fresh)  # later rows with the same prompt start from here
            pasts.append(past)
            # the row's entry replaces its source if the source was this conversation's last turn:
            # all of that prompt but its closing came back (a sibling sharing only the question would
            # still need its own entry next turn)
            previous_turn = source is not None and length >= source.prompt_tokens - PROMPT_CLOSING_TOKENS
            used.append((source if previous_turn else None, fresh))
        room = min(generation_config.max_new_tokens, DECODE_ROOM)
        cache, input_ids, attention_mask, position_ids = _left_padded(rows, pasts, pad_id, self.device, room)
        decoder = Decoder(self.model, generation_config, stopping_criteria, input_ids, attention_mask)
        return decoder.run(cache, position_ids,
                           lambda index, generated, layers: self._store(rows[index], used[index], generated, layers))

    def _prefill(self, row: Row, cached: int, layers: list | None) -> tuple[list, Entry | None]:
        """The row's key/values for all prompt tokens but the last, computing those past `cached`."""
        end = len(row.ids) - 1
        if cached == end:
            return layers, None
        images = [index for index, (start, _) in enumerate(row.spans) if start >= cached]
        extra = {}
        if images:  # pixels of the uncached images only: the model matches them to image tokens in order
            first, last = row.pixel_rows[images[0]][0], row.pixel_rows[images[-1]][1]
            extra = dict(pixel_values=row.pixel_values[first:last], image_grid_thw=row.grids[images])
        positions = row.positions[:, cached:end]
        text_positions = torch.arange(cached, end, device=self.device)[None]
        cache = DynamicCache(ddp_cache_data=[(k[None], v[None]) for k, v in layers]) if layers else DynamicCache()
        self.model(input_ids=row.ids[None, cached:end], position_ids=torch.cat([text_positions, positions])[:, None],
                   cache=cache, use_cache=True, logits_to_keep=1, **extra)
        past = [(layer.keys[0], layer.values[0]) for layer in cache.layers]
        spans = [span for span in row.spans if span[1] <= end]
        return past, Entry(row.ids_np[:end].copy(), spans, row.fingerprints[:len(spans)], past, len(row.ids))

    def _store(self, row: Row, used: tuple[Entry | None, Entry | None], generated: torch.Tensor,
               layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep the row's prompt + generated key/values in place of the entries it supersedes.

        The new entry holds all that the row reused of its previous turn's entry;
        the rest of that (the old generation prompt and maybe the reply, which the
        single_user layout rewrites) would only serve a replay of the previous turn.
        """
        ids = np.concatenate([row.ids_np, generated.cpu().numpy().astype(row.ids_np.dtype)])
        for entry in used:
            self.cache.discard(entry)
        self.cache.put(Entry(ids, row.spans, row.fingerprints, layers, len(row.ids)))


def _left_padded(rows: list[Row], pasts: list[list], pad_id: int, device: str, room: int):
    """One cache of all rows' pasts plus the decode loop's inputs, left-padded so each row ends at the right edge.

    The cache has `room` spare slots per layer for the tokens about to be generated,
    left unset: each is written before attention reads it (padding must be zeros,
    as masked garbage could still be NaN).
    """
    batch, length = len(rows), max(len(row.ids) for row in rows)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((batch, length), dtype=torch.long, device=device)
    position_ids = torch.zeros((4, batch, length), dtype=torch.long, device=device)
    buffers = []
    for keys, values in pasts[0]:
        shape = (batch, keys.shape[0], length - 1 + room, keys.shape[2])
        buffers.append((keys.new_empty(shape), values.new_empty(shape)))
    for index, (row, past) in enumerate(zip(rows, pasts)):
        n = len(row.ids)
        input_ids[index, length - n:] = row.ids
        attention_mask[index, length - n:] = 1
        position_ids[0, index, length - n:] = torch.arange(n, device=device)  # text positions, as generate makes them
        position_ids[1:, index, length - n:] = row.positions
        for (keys, values), (row_keys, row_values) in zip(buffers, past):
            keys[index, :, :length - n], values[index, :, :length - n] = 0, 0
            keys[index, :, length - n:length - 1] = row_keys
            values[index, :, length - n:length - 1] = row_values
    cache = DynamicCache()
    cache.layers = [RoomyLayer(keys, values, length - 1) for keys, values in buffers]
    return cache, input_ids, attention_mask, position_ids


def _runs(kinds: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of non-text tokens."""
    spans, start = [], None
    for at, kind in enumerate(kinds + [0]):
        if kind and start is None:
            start = at
        elif not kind and start is not None:
            spans.append((start, at))
            start = None
    return spans


def _fingerprint(pixels: torch.Tensor, grid: torch.Tensor) -> bytes:
    digest = hashlib.blake2b(grid.cpu().numpy().tobytes(), digest_size=16)
    digest.update(pixels.cpu().contiguous().numpy().tobytes())
    return digest.digest()
