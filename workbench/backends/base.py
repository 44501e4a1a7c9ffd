"""What every model backend shares: the call shape, results, stop-string trimming and image intake.

A backend takes a batch of HF-style chat conversations (one per live
episode) and returns one `Generation` per conversation, in order. Failures
of one conversation (a bad image, a server error) come back as
`Generation(finish_reason="error")` so the other episodes carry on.
Images inside messages go through `workbench.images.load_image`, so the
pixel-count / decompression-bomb guard and format allow-list apply here too.
"""

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from workbench.images import ImageError, image_path, load_image
from workbench.trace import ref_sha


@dataclass
class Generation:
    """One generated assistant turn. `text` keeps the stop string that ended it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "error"
    error: str | None = None


@dataclass
class GenerationConfig:
    """Sampling settings for one backend call; temperature 0 means greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # e.g. "</search>", "</code>", "</answer>"


class ChatBackend(Protocol):
    model_id: str
    adapter: str | None

    def generate(self, conversations: list[list[dict]], config: GenerationConfig,
                 tools: list[dict] | None = None) -> list[Generation]:
        ...


def error_generation(message: str) -> Generation:
    return Generation(text="", prompt_tokens=0, completion_tokens=0, finish_reason="error", error=message)


def trim_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut `text` right after the earliest-ending stop string; (text, whether one was found)."""
    best_end = None
    for stop in stops:
        if not stop:
            continue
        start = text.find(stop)
        if start >= 0 and (best_end is None or start + len(stop) < best_end):
            best_end = start + len(stop)
    if best_end is None:
        return text, False
    return text[:best_end], True


def is_image_block(block: Any) -> bool:
    """Whether a content block is an image (the test the Qwen chat templates use)."""
    return isinstance(block, dict) and (block.get("type") in ("image", "image_url")
                                        or "image" in block or "image_url" in block)


def image_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The image blocks of one message, in order."""
    content = message.get("content")
    return [block for block in content if is_image_block(block)] if isinstance(content, list) else []


def block_image_source(block: dict[str, Any]) -> Any:
    """What an image block points at: a path, PIL image, "sha256:" ref, data URL or URL."""
    if "image" in block and block["image"] is not None:
        return block["image"]
    url = block.get("image_url")
    return url.get("url") if isinstance(url, dict) else url


def load_block_image(source: Any) -> Image.Image:
    """Open an image given as a PIL image, a path, a "sha256:" store reference or a data URL."""
    if isinstance(source, Image.Image):
        return load_image(source)
    if isinstance(source, Path):
        return load_image(source)
    if not isinstance(source, str) or not source:
        raise ImageError(f"image block holds {type(source).__name__}; give a path, PIL image or data URL")
    sha = ref_sha(source)
    if sha is not None:
        return load_image(image_path(sha))
    if source.startswith("data:"):
        return load_image(decode_data_url(source), name="data URL")
    if source.startswith(("http://", "https://")):
        raise ImageError(f"{source[:60]}: remote image URLs are not fetched; download the image and pass its path")
    return load_image(source.removeprefix("file://"))


def decode_data_url(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ImageError("image data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"image data URL is not valid base64: {exc}") from exc
