"""Agent service: load models once, run questions, import traces; used by the CLI and the UI.

Keeps loaded backends per process (loading a model is the slow part), opens
a run per playground session, and wires real tools into the runner.
"""

import json
import threading
from pathlib import Path
from typing import Iterator

from workbench.agent_tools import build_tools
from workbench.backends import ChatBackend, resolve_model
from workbench.runner import AgentItem, AgentRunner, RunnerConfig, TurnEvent
from workbench.store import Store
from workbench.trace import Trace
from workbench.trace_io import import_traces, trace_from_chain

_backends: dict[tuple[str, str | None], ChatBackend] = {}
_backends_lock = threading.Lock()


def get_backend(model: str, adapter: str | None = None) -> ChatBackend:
    """The backend for a model spec, loaded once per process."""
    key = (model, adapter or None)
    with _backends_lock:
        if key not in _backends:
            _backends[key] = resolve_model(model, adapter)
        return _backends[key]


def stream_question(question: str, images: list[str | Path], *, model: str = "tiny", adapter: str | None = None,
                    config: RunnerConfig | None = None, store: Store | None = None, run_id: str | None = None,
                    search_backend: str = "local", corpus: str | Path | None = None,
                    search_mode: str = "cache-first") -> Iterator[TurnEvent]:
    """Run one question (G samples) and yield every turn as it happens; traces are stored."""
    config = config or RunnerConfig()
    item = AgentItem(question=question, images=list(images))
    store = store or Store()
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


def import_jsonl(path: str | Path, name: str = "imported") -> list[str]:
    store = Store()
    run_id = store.create_run(name, "imported", config={"source": str(path)}, status="succeeded")
    return import_traces(store, path, run_id)


def import_chains(path: str | Path, name: str = "imported", images_dir: str | Path | None = None) -> list[str]:
    """Import a JSON list of raw Visual-ARFT chains: {chain|response, image?, question?, answer?}."""
    path = Path(path)
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ValueError(f"{path.name}: expected a JSON list of chain records")
    store = Store()
    traces = []
    for position, record in enumerate(records):
        raw = record.get("chain") or record.get("response") if isinstance(record, dict) else None
        if not isinstance(raw, str):
            raise ValueError(f"{path.name} item {position}: needs a 'chain' or 'response' string")
        sha = None
        if record.get("image"):
            base = Path(images_dir) if images_dir else path.parent
            sha = store.put_image(base / record["image"])
        gold = record.get("answer")
        traces.append(trace_from_chain(raw, image_sha=sha, question=record.get("question"),
                                       gold=[gold] if isinstance(gold, str) else list(gold or [])))
        traces[-1].item_id = str(record.get("id", position))
    run_id = store.create_run(name, "imported", config={"source": str(path)}, status="succeeded")
    for trace in traces:
        trace.run_id = run_id
    store.save_traces(traces)
    return [t.id for t in traces]
