"""Model backends: the one entry point the runner, UI and CLI use to get a model.

Owns `resolve_model`, which turns a model spec string into a `ChatBackend`:

- "demo": the shipped demo model (the tiny model trained on the demo world,
  in workbench/demo/model, path in workbench.settings), the default;
- "tiny", "tiny-qwen2.5-vl", "tiny-qwen3-vl": the embedded untrained tiny model
  (built on first use into settings.models_dir(), see workbench.backends.tiny);
- a local model folder or a Hugging Face Hub id: `TransformersBackend`;
- "openai:<model>@<base_url>": `OpenAIBackend` on any OpenAI-compatible
  endpoint, e.g. "openai:gpt-4o@https://api.openai.com/v1" or
  "openai:/models/tiny@http://127.0.0.1:8000/v1" (`transformers serve`).
  The model name may itself contain "@"; the split is at the last "@"
  before "http(s)://". "openai:<model>" alone means api.openai.com.

The call shape (`ChatBackend`, `Generation`, `GenerationConfig`) lives in
workbench.backends.base and is re-exported here.
"""

import re
from typing import Any

from workbench import settings
from workbench.backends.base import ChatBackend, Generation, GenerationConfig, trim_at_stop
from workbench.backends.local import TransformersBackend
from workbench.backends.remote import OpenAIBackend

__all__ = ["ChatBackend", "Generation", "GenerationConfig", "OpenAIBackend", "TransformersBackend",
           "DEMO_MODEL", "TINY_MODELS", "resolve_model", "trim_at_stop"]

DEMO_MODEL = "demo"
# Spec → tiny-model architecture; the first name of each arch is the id recorded in traces.
TINY_MODELS = {"tiny": "qwen2_5_vl", "tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-qwen3-vl": "qwen3_vl"}
_TINY_IDS = {"qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl"}
_OPENAI_SPEC = re.compile(r"openai:(?P<model>.+?)(?:@(?P<url>https?://[^@\s]+))?")
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
OPENAI_KEYS = {"api_key_env", "api_key", "timeout_s", "max_concurrency"}


def resolve_model(spec: str, adapter: str | None = None, **kw: Any) -> ChatBackend:
    """The backend for a model spec (see the module docstring); ValueError says what to pass if unusable.

    Keyword arguments go to the backend: device, dtype, max_pixels, min_pixels,
    batch_size for local models; api_key_env, api_key (the user's own key),
    timeout_s, max_concurrency for OpenAI-compatible endpoints. The server's
    key goes only to WORKBENCH_OPENAI_BASE_URLS (see workbench.backends.remote).
    """
    spec = (spec or "").strip()
    if not spec:
        raise ValueError("no model given: pass 'demo', 'tiny', a model folder, a hub id or 'openai:<model>@<base_url>'")
    if spec.startswith("openai:"):
        match = _OPENAI_SPEC.fullmatch(spec)
        if not match:
            raise ValueError(f"{spec!r}: write OpenAI-compatible models as 'openai:<model>@<base_url>', "
                             "e.g. openai:gpt-4o@https://api.openai.com/v1")
        if adapter:
            raise ValueError("LoRA adapters are applied by the server for OpenAI-compatible endpoints; "
                             "serve the adapter there and name it as the model")
        unknown = set(kw) - OPENAI_KEYS
        if unknown:
            raise ValueError(f"OpenAI-compatible backends take {sorted(OPENAI_KEYS)}, not {sorted(unknown)}")
        return OpenAIBackend(match.group("url") or OPENAI_DEFAULT_URL, match.group("model"), **kw)
    if spec == DEMO_MODEL:
        backend = TransformersBackend(str(settings.demo_model_dir()), adapter, **kw)
        backend.model_id = settings.DEMO_MODEL_ID
        return backend
    if spec in TINY_MODELS:
        from workbench.backends.tiny import ensure_tiny_model

        arch = TINY_MODELS[spec]
        backend = TransformersBackend(str(ensure_tiny_model(arch)), adapter, **kw)
        backend.model_id = _TINY_IDS[arch]
        return backend
    return TransformersBackend(spec, adapter, **kw)
