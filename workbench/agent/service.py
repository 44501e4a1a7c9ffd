"""Agent service: load models once and run questions; used by the CLI and the UI.

Keeps loaded backends per process (loading a model is the slow part), opens
a run per playground session, and wires real tools into the runner.
"""

import threading
from collections.abc import Iterator
from pathlib import Path

from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig, TurnEvent
from workbench.agent.tools import build_tools
from workbench.backends import ChatBackend, resolve_model
from workbench.images import load_image
from workbench.store import Store
from workbench.trace import Trace

_backends: dict[tuple[str, str | None], ChatBackend] = {}
_backends_lock = threading.Lock()


def get_backend(model: str, adapter: str | None = None) -> ChatBackend:
    """The backend for a model spec, loaded once per process."""
    key = (model, adapter or None)
    with _backends_lock:
        if key not in _backends:
            _backends[key] = resolve_model(model, adapter)
        return _backends[key]


def stream_question(question: str, images: list[str | Path], *, model: str = "demo", adapter: str | None = None,
                    config: RunnerConfig | None = None, store: Store | None = None, run_id: str | None = None,
                    search_backend: str = "local", corpus: str | Path | None = None,
                    search_mode: str = "cache-first") -> Iterator[TurnEvent]:
    """Run one question (G samples) and yield every turn as it happens; traces are stored."""
    config = config or RunnerConfig()
    item = AgentItem(question=question, images=list(images))
    store = store or Store()
    for image in item.images:  # a bad image is refused before the model loads
        load_image(image)
    tools = build_tools(config.tools, search_backend=search_backend, corpus=corpus, search_mode=search_mode)
    backend = get_backend(model, adapter)
    if run_id is None:
        run_id = store.create_run(f"playground: {question[:40]}", "playground", model_id=backend.model_id,
                                  config={"runner": config.__dict__, "model": model, "adapter": adapter})
    runner = AgentRunner(backend, tools, config, store=store, run_id=run_id)
    yield from runner.stream([item])
    store.update_run(run_id, status="succeeded")


def run_question(question: str, images: list[str | Path], **kwargs) -> list[Trace]:
    """Run one question to completion; returns its traces (one per sample)."""
    return [event.trace for event in stream_question(question, images, **kwargs) if event.done]
