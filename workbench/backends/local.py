"""Local vision-language models through transformers: Qwen2.5-VL, Qwen3-VL and LoRA adapters.

`TransformersBackend` loads a model folder or hub id with AutoProcessor +
AutoModelForImageTextToText (optionally a peft LoRA adapter on top) and
generates one assistant turn for a whole batch of conversations at once
(left padding, per-row stop strings, seeded sampling): `generate` without
KV reuse, workbench.backends.kv_decode's loop with it.
A model source that is not a model gets a ValueError saying what to pass
instead of a traceback from the hub. torch/transformers import lazily, so
importing this module stays cheap for OpenAI-only use.

Prefix KV-cache reuse (`reuse_kv_cache=True`, the default): agent turns only
append to a conversation, so the backend keeps each row's key/values after
generating and, next turn, prefills only the tokens after the longest cached
prefix (token-level match, images compared by pixels; see
workbench.backends.kv_reuse). Greedy outputs are the same tokens as with reuse off.
`kv_cache_bytes` bounds the kept key/values (LRU, default 1 GiB; size it to
at least live rows x tokens per row x bytes per token, or a large batch
evicts what its next turn needs). The kept key/values belong to the current
weights: call `clear_kv_cache()` after changing them in place. Pass
`reuse_kv_cache=False` to prefill every prompt in full; models without
Qwen-VL rope indexing always do (`kv_reuse_off_reason` says why).

`batch_size` (default 64) is how many rows decode together. With reuse a row
leaves the decode batch when it ends, so a row costs no more in a large batch
than in a small one, and fewer, larger batches save per-step overhead (on a
CPU, 3 turns of the bench's 64 episodes decoded in 4.3 s at 64 rows, 4.9 s at
32, 6.1 s at 16). Memory grows with it: a batch holds rows x (prompt + new
tokens) x key/value bytes per token, e.g. 64 x 2,000 x 36 KiB = 4.6 GB for a
3B Qwen-VL in bf16, more for 7B models or long prompts: lower it on a small
GPU (a batch that runs out of memory comes back as error generations).
"""

import copy
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.backends.base import (
    Generation,
    GenerationConfig,
    block_image_source,
    error_generation,
    image_blocks,
    load_block_image,
    trim_at_stop,
)
from workbench.images import ImageError

MODEL_HINT = ("Pass 'tiny' for the embedded tiny model, a folder saved with save_pretrained (it holds "
              "config.json), or a Hugging Face Hub id such as Qwen/Qwen2.5-VL-3B-Instruct.")
ADAPTER_HINT = "Pass a LoRA adapter folder saved with peft (it holds adapter_config.json) or its hub id."
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?")
IMAGE_PLACEHOLDER = "<|image_pad|>"
# The tiny model keeps 4 KiB of key/values per token, a 3B Qwen-VL in bf16 ~36 KiB.
DEFAULT_KV_CACHE_BYTES = 1 << 30


def _source(spec: str, *, marker: str, what: str, hint: str) -> tuple[str, bool]:
    """(what to hand to from_pretrained, whether it is a local folder); ValueError if it cannot be one."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{what} {spec!r} is a file, not a folder. {hint}")
        if not (path / marker).is_file():
            if marker == "config.json" and (path / "adapter_config.json").is_file():
                raise ValueError(f"{spec!r} is a LoRA adapter, not a model: pass the base model as the model "
                                 "and this folder as the adapter.")
            raise ValueError(f"{what} folder {spec!r} has no {marker}, so it is not a saved {what}. {hint}")
        return str(path), True
    looks_like_path = spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1
    if looks_like_path or not _HUB_ID.fullmatch(spec):
        raise ValueError(f"{what} {spec!r}: no such folder, and it is not a hub id. {hint}")
    return spec, False


def _check_hub(repo_id: str, what: str, hint: str, marker: str) -> None:
    """Fail fast with a clear message when a hub id is neither cached nor reachable.

    Without this, from_pretrained retries an unreachable hub for minutes.
    """
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(huggingface_hub.try_to_load_from_cache(repo_id, marker), str):
        return
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ValueError(f"{what} {repo_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set. {hint}")
    try:
        huggingface_hub.model_info(repo_id, timeout=10)
    except GatedRepoError as exc:
        raise ValueError(f"{what} {repo_id!r} is gated on the hub: accept its licence and set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise ValueError(f"{what} {repo_id!r}: no such repository on the Hugging Face Hub. {hint}") from exc
    except Exception as exc:  # DNS/connection/timeout errors differ by transport
        raise ValueError(f"{what} {repo_id!r} is not cached and the Hugging Face Hub is unreachable "
                         f"({_short(exc)}). {hint}") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: Any, device: str):
    """bf16 on GPUs that support it (fp16 on older ones), float32 on CPU, or the dtype asked for."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype; use 'auto', 'float32', 'bfloat16' or 'float16'")
    return resolved


class TransformersBackend:
    """A local Qwen-VL model (plus optional LoRA adapter) generating batches of chat turns."""

    def __init__(self, model: str, adapter: str | None = None, *, device: str = "auto", dtype: Any = "auto",
                 max_pixels: int | None = None, min_pixels: int | None = None, batch_size: int = 64,
                 reuse_kv_cache: bool = True, kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from workbench.backends.kv_reuse import KVReuse, unsupported_reason  # imports transformers

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_id = str(model)
        self.adapter = str(adapter) if adapter else None
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        source, local = _source(self.model_id, marker="config.json", what="model", hint=MODEL_HINT)
        adapter_source = None
        if self.adapter:
            adapter_source, adapter_local = _source(self.adapter, marker="adapter_config.json", what="adapter",
                                                    hint=ADAPTER_HINT)
        if not local:
            _check_hub(source, "model", MODEL_HINT, "config.json")
        if adapter_source and not adapter_local:
            _check_hub(adapter_source, "adapter", ADAPTER_HINT, "adapter_config.json")
        where = "folder" if local else "the Hugging Face Hub"
        try:
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=local)
            loaded = AutoModelForImageTextToText.from_pretrained(source, dtype=self.dtype, local_files_only=local)
        except Exception as exc:  # hub/network/config errors come in many types
            raise ValueError(f"could not load model {self.model_id!r} from {where} as an image-text-to-text "
                             f"model ({_short(exc)}). {MODEL_HINT}") from exc
        if adapter_source:
            from peft import PeftModel

            try:
                loaded = PeftModel.from_pretrained(loaded, adapter_source, local_files_only=adapter_local)
            except Exception as exc:
                raise ValueError(f"could not load adapter {self.adapter!r} on {self.model_id!r} "
                                 f"({_short(exc)}). {ADAPTER_HINT}") from exc
            if hasattr(loaded, "merge_and_unload"):  # LoRA-style adapters: merged weights generate faster
                loaded = loaded.merge_and_unload()
        self.model = loaded.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        self._set_pixel_range(min_pixels, max_pixels)
        self._stop_ids = self._terminator_ids()
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()  # one generate at a time: seeding and the model are shared
        self._torch = torch
        self.kv_reuse_off_reason = None if reuse_kv_cache else "turned off (reuse_kv_cache=False)"
        if reuse_kv_cache:
            self.kv_reuse_off_reason = unsupported_reason(self.model)
        self._kv = None
        if self.kv_reuse_off_reason is None:
            self._kv = KVReuse(self.model, self.processor, kv_cache_bytes, self.device)

    def clear_kv_cache(self) -> None:
        """Drop every kept key/value: after changing the weights, or to free memory while idle."""
        if self._kv is not None:
            with self._lock:
                self._kv.cache.clear()

    def _set_pixel_range(self, min_pixels: int | None, max_pixels: int | None) -> None:
        if min_pixels is None and max_pixels is None:
            return
        from transformers.image_utils import SizeDict

        image_processor = self.processor.image_processor
        size = image_processor.size
        if getattr(size, "longest_edge", None) is None:
            raise ValueError(f"min_pixels/max_pixels need a Qwen-VL image processor; {self.model_id!r} has "
                             f"{type(image_processor).__name__}")
        low = size.shortest_edge if min_pixels is None else int(min_pixels)
        high = size.longest_edge if max_pixels is None else int(max_pixels)
        if low > high:
            raise ValueError(f"min_pixels {low} is above max_pixels {high}")
        image_processor.size = SizeDict(shortest_edge=low, longest_edge=high)

    def _terminator_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        for token_id in (self.model.generation_config.pad_token_id, self.tokenizer.pad_token_id,
                         self.tokenizer.eos_token_id):
            if token_id is not None:
                ids.add(int(token_id))
        return ids

    @property
    def pixel_range(self) -> tuple[int, int]:
        size = self.processor.image_processor.size
        return int(size.shortest_edge), int(size.longest_edge)

    def generate(self, conversations: list[list[dict]], config: GenerationConfig,
                 tools: list[dict] | None = None) -> list[Generation]:
        """One assistant turn per conversation, in order; a failed row is an error Generation."""
        results: list[Generation | None] = [None] * len(conversations)
        prepared = []
        for index, conversation in enumerate(conversations):
            try:
                prepared.append((index, *self._prepare(conversation, tools)))
            except (ImageError, ValueError, TypeError) as exc:
                results[index] = error_generation(str(exc))
            except Exception as exc:  # template errors (jinja) and the like
                results[index] = error_generation(f"could not build the prompt: {_short(exc)}")
        # Rows of similar prompt length share a batch, so left padding wastes little compute.
        prepared.sort(key=lambda row: len(row[1]))
        with self._lock:
            for start in range(0, len(prepared), self.batch_size):
                chunk = prepared[start:start + self.batch_size]
                try:
                    generations = self._generate_batch(chunk, config)
                except Exception as exc:  # e.g. out of memory: report per row, keep the runner alive
                    generations = [error_generation(f"generation failed: {_short(exc)}")] * len(chunk)
                for (index, _, _), generation in zip(chunk, generations):
                    results[index] = generation
        return results

    def _prepare(self, conversation: list[dict], tools: list[dict] | None) -> tuple[str, list]:
        """The rendered prompt and its images, in the order the template places them."""
        if not conversation:
            raise ValueError("empty conversation: give at least one message")
        images = [load_block_image(block_image_source(block))
                  for message in conversation if message.get("role") in ("user", "tool")
                  for block in image_blocks(message)]
        text = self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True,
                                                  tools=tools or None)
        placeholders = text.count(IMAGE_PLACEHOLDER)
        if placeholders != len(images):
            raise ValueError(f"the chat template of {self.model_id!r} placed {placeholders} image(s) for "
                             f"{len(images)} given; it does not show images in every role used here "
                             "(use the single_user layout or put images in user messages)")
        return text, images

    def _generation_config(self, config: GenerationConfig):
        generation_config = copy.deepcopy(self.model.generation_config)
        generation_config.max_new_tokens = config.max_new_tokens
        generation_config.max_length = None
        if config.temperature > 0:
            # top_k 0: sample from temperature + top_p only, as OpenAI-style endpoints do
            generation_config.update(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=0)
        else:
            generation_config.update(do_sample=False, temperature=1.0, top_p=1.0, top_k=50)
        return generation_config

    def _token_stops(self, stops: list[str]) -> dict[int, str] | None:
        """Stop strings that are each one vocabulary token (e.g. the tiny model's protocol tags), by id.

        Such stops can end generation as extra end-of-sequence ids, which is
        cheaper than matching strings after every step; None if any stop spans tokens.
        """
        ids = {}
        for stop in stops:
            encoded = self.tokenizer.encode(stop, add_special_tokens=False) if stop else []
            if len(encoded) != 1:
                return None
            ids[encoded[0]] = stop
        return ids or None

    def _stopping_criteria(self, stops: list[str]):
        """Per-row stop-string criteria, built once per stop set (building scans the whole vocabulary)."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        key = tuple(stop for stop in stops if stop)
        if not key or self._token_stops(list(key)):
            return None
        if key not in self._stop_criteria:
            self._stop_criteria[key] = StopStringCriteria(self.tokenizer, list(key))
        return StoppingCriteriaList([self._stop_criteria[key]])

    @contextmanager
    def _seeded(self, seed: int | None):
        if seed is None:
            yield
            return
        torch = self._torch
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _generate_batch(self, chunk: list[tuple[int, str, list]], config: GenerationConfig) -> list[Generation]:
        generation_config = self._generation_config(config)
        token_stops = self._token_stops(config.stop) or {}
        if token_stops:
            generation_config.eos_token_id = sorted(set(self._stop_ids) | set(token_stops))
        settings = dict(generation_config=generation_config, stopping_criteria=self._stopping_criteria(config.stop))
        if self._kv is not None:
            with self._torch.inference_mode():
                rows = [self._kv.prepare(text, row_images) for _, text, row_images in chunk]
                with self._seeded(config.seed):
                    output = self._kv.generate(rows, self.tokenizer.pad_token_id, **settings)
            prompt_length = max(len(row.ids) for row in rows)
            prompt_counts = [len(row.ids) for row in rows]
        else:
            texts = [text for _, text, _ in chunk]
            images = [image for _, _, row_images in chunk for image in row_images]
            inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
            inputs = inputs.to(self.device)
            with self._torch.inference_mode(), self._seeded(config.seed):
                output = self.model.generate(**inputs, **settings)
            prompt_length = inputs["input_ids"].shape[1]
            prompt_counts = inputs["attention_mask"].sum(dim=1).tolist()
        return [self._decode_row(row.tolist(), int(prompt_tokens), config.stop, token_stops)
                for row, prompt_tokens in zip(output[:, prompt_length:], prompt_counts)]

    def _decode_row(self, ids: list[int], prompt_tokens: int, stops: list[str],
                    token_stops: dict[int, str]) -> Generation:
        end = next((position for position, token in enumerate(ids)
                    if token in self._stop_ids or token in token_stops), None)
        if end is not None and ids[end] in token_stops:
            end += 1  # a stop token is part of the text (the closing tag), unlike end-of-turn
        body = ids if end is None else ids[:end]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        text, hit_stop = trim_at_stop(text, stops)
        ended_on_eos = end is not None and not hit_stop
        return Generation(text=text, prompt_tokens=prompt_tokens,
                          completion_tokens=len(body) + (1 if ended_on_eos else 0),
                          finish_reason="stop" if hit_stop or ended_on_eos else "length")
