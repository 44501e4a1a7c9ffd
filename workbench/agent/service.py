"""Agent service: load models once and run questions; used by the CLI and the UI.

Keeps loaded backends per process (loading a model is the slow part), owns
each question's run from creation to its final state, and wires the real
tools into the runner.
"""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig, TurnEvent
from workbench.agent.tools import build_tools
from workbench.backends import ChatBackend, resolve_model
from workbench.benchmarks.scoring import f1_em
from workbench.database_file import disk_full_message, is_disk_full
from workbench.images import load_image
from workbench.rewards.episode import score_episode
from workbench.store import Store
from workbench.trace import Trace

_backends: dict[tuple[str, str | None], ChatBackend] = {}
_backends_lock = threading.Lock()


def get_backend(model: str, adapter: str | None = None, api_key: str | None = None) -> ChatBackend:
    """The backend for a model spec, loaded once per process.

    With the user's own `api_key` (OpenAI-compatible endpoints only) a fresh backend is made for the call and
    never cached, so the key lives only as long as the run that uses it.
    """
    if api_key and api_key.strip():
        if not model.strip().startswith("openai:"):
            raise ValueError("an API key is only used with openai:<model>@<base_url> models; clear the key field")
        return resolve_model(model, adapter, api_key=api_key)
    key = (model, adapter or None)
    with _backends_lock:
        if key not in _backends:
            _backends[key] = resolve_model(model, adapter)
        return _backends[key]


def stream_question(store: Store, question: str, images: list[str | Path], *, model: str = "demo",
                    adapter: str | None = None, config: RunnerConfig | None = None, source: str = "playground",
                    tags: dict[str, Any] | None = None, gold: list[str] | None = None,
                    problem_labels: list[str] | None = None, search_backend: str = "local",
                    corpus: str | Path | None = None, search_mode: str = "cache-first",
                    api_key: str | None = None) -> Iterator[TurnEvent]:
    """Run one question (G samples) in a run of its own, yielding every turn as it happens.

    The service owns the run from start to end: it is created once the model is
    loaded (config: the runner settings, model, adapter, `source`, and `tags`
    such as a public-demo visitor), its traces are stored as they finish, and
    it ends succeeded, or failed with the error when anything raises (a closed
    stream counts as cancelled). With `gold` answers (and, for a coding item,
    its `problem_labels`) each finished episode is scored: F1/EM of its answer
    and every reward component as GRPO would give them (`score_with_gold`).
    `api_key` is the user's own key for an OpenAI-compatible endpoint: used
    for this run only, never stored.
    """
    config = config or RunnerConfig()
    gold = [g.strip() for g in gold or [] if g and g.strip()]
    item = AgentItem(question=question, images=list(images), gold=gold,
                     metadata={"problem_labels": list(problem_labels)} if problem_labels else {})
    for image in item.images:  # a bad image is refused before the model loads
        load_image(image)
    tools = build_tools(config.tools, search_backend=search_backend, corpus=corpus, search_mode=search_mode)
    backend = get_backend(model, adapter, api_key)
    run_config = {"runner": {**config.__dict__, "tools": list(config.tools)}, "model": model,
                  "adapter": adapter or None, "source": source, **(tags or {})}
    run_id = store.create_run(f"{source}: {question[:40]}", "playground", model_id=backend.model_id,
                              config=run_config)
    runner = AgentRunner(backend, tools, config, store=store, run_id=run_id,
                         score=score_with_gold if gold else None)
    try:
        yield from runner.stream([item])
    except GeneratorExit:
        store.update_run(run_id, status="cancelled", summary={"error": "the run was stopped before it finished"})
        raise
    except BaseException as exc:
        error = disk_full_message() if is_disk_full(exc) else f"{type(exc).__name__}: {exc}"
        store.update_run(run_id, status="failed", summary={"error": error})  # kept for later if the disk is full
        raise
    store.update_run(run_id, status="succeeded")


def score_with_gold(trace: Trace, item: AgentItem) -> dict[str, float]:
    """F1/EM of the episode's answer against the gold answers, and its reward components and total."""
    f1, em = f1_em(trace.final_answer, item.gold, "mat-coding")
    first_user = next(i for i, m in enumerate(trace.messages) if m.get("role") == "user")
    code_calls = [t.tool_call for t in trace.turns if t.tool_call and t.tool_call.name == "code"]
    parts = score_episode(trace.messages[first_user + 1:], gold=item.gold,
                          problem_labels=item.metadata.get("problem_labels"),
                          code_ok=all(c.ok for c in code_calls) if code_calls else None)
    return {"f1": f1, "em": em, **parts}


def run_question(store: Store, question: str, images: list[str | Path], **kwargs: Any) -> list[Trace]:
    """Run one question to completion; returns its traces (one per sample)."""
    return [event.trace for event in stream_question(store, question, images, **kwargs) if event.done]
