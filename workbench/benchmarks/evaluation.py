"""Evaluation service: run the agent over a benchmark, score it, and store it as a run.

`run_evaluation` loads and validates the whole benchmark before creating a
run, rolls items out in batches (each finished trace is stored with its
F1/EM), and resumes a run by redoing only items without a trace. The run is
marked succeeded, with its summary, only after every item is scored, so an
interrupted evaluation never looks finished. `import_predictions` stores an
existing result file as a run that the UI can compare.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig
from workbench.benchmarks.loaders import BENCHMARK_FORMATS, BenchmarkItem, load_benchmark
from workbench.benchmarks.scoring import (
    ScoreReport,
    f1_em,
    load_predictions,
    score_predictions,
    validate_predictions,
)
from workbench.fields import setting
from workbench.store import Store
from workbench.trace import Trace

DEFAULT_TOOLS = {"mat-coding": ("code",), "mat-search": ("search",), "multihop": ("search",)}
MAX_BATCH_ITEMS = 1024


@dataclass
class EvalConfig:
    """What to evaluate, on which model, with which tools."""

    benchmark: str = setting("Benchmark format: mat-coding, mat-search or multihop.", default="mat-coding")
    data: str = setting("The benchmark JSON/JSONL file.", default="")
    images: str | None = setting("Folder the item image paths are relative to (default: the file's folder).",
                               default=None)
    model: str = setting("Model: 'demo' (shipped demo model), 'tiny' (untrained), a folder, a hub id, or "
                       "openai:<model>@<base_url>.", default="demo")
    adapter: str | None = setting("LoRA adapter folder to load on the model.", default=None)
    limit: int | None = setting("Evaluate only the first N items.", default=None)
    batch_items: int = setting("Items rolled out together per batch.", default=8)
    corpus: str | None = setting("Documents for the local search backend (JSONL or folder).", default=None)
    search_backend: str = setting("local or serpapi.", default="local")
    search_mode: str = setting("Search cache mode: live, cache-first or offline.", default="cache-first")
    name: str = setting("Name of the run.", default="")

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARK_FORMATS:
            raise ValueError(f"benchmark {self.benchmark!r} is unknown; use one of {', '.join(BENCHMARK_FORMATS)}")
        if not self.data:
            raise ValueError("no benchmark file given; set data to a MAT-style JSON file")
        if not Path(self.data).is_file():
            raise ValueError(f"benchmark file {self.data} does not exist; check the path")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit}; use a positive number or leave it empty for all items")
        if self.batch_items < 1:
            raise ValueError(f"batch_items={self.batch_items}; use at least 1")
        if self.batch_items > MAX_BATCH_ITEMS:
            raise ValueError(f"batch_items={self.batch_items} is over the limit of {MAX_BATCH_ITEMS}; use at most "
                             f"{MAX_BATCH_ITEMS}")


def _scorer(benchmark: str) -> Callable[[Trace, AgentItem], dict[str, float]]:
    def score(trace: Trace, item: AgentItem) -> dict[str, float]:
        f1, em = f1_em(trace.final_answer, item.gold, benchmark)
        return {"f1": f1, "em": em, "total": f1}
    return score


def _agent_item(item: BenchmarkItem) -> AgentItem:
    if item.image is None:
        raise ValueError(f"item {item.id}: has no image; the agent needs one")
    return AgentItem(question=item.question, images=[item.image], item_id=str(item.id), gold=item.answers,
                     clean_image=item.clean_image, metadata={"types": item.types, "split": item.split})


def run_evaluation(store: Store, config: EvalConfig, runner_config: RunnerConfig | None = None, *,
                   run_id: str | None = None, backend=None, tools=None,
                   on_progress: Callable[[int, int], None] | None = None) -> str:
    """Evaluate (or resume run `run_id`); returns the run id. Raises ValueError on bad input."""
    items = load_benchmark(config.benchmark, config.data, config.images)[: config.limit]
    runner_config = runner_config or RunnerConfig(tools=DEFAULT_TOOLS[config.benchmark])
    agent_items = [_agent_item(item) for item in items]  # validate every item before any run exists
    if backend is None:
        from workbench.agent.service import get_backend

        backend = get_backend(config.model, config.adapter)
    if tools is None:
        from workbench.agent.tools import build_tools

        tools = build_tools(runner_config.tools, search_backend=config.search_backend, corpus=config.corpus,
                            search_mode=config.search_mode)
    if run_id is None or store.get_run(run_id) is None:
        run_id = store.create_run(
            config.name or f"eval {config.benchmark} {Path(config.data).name} {config.model}", "eval",
            run_id=run_id, model_id=backend.model_id, benchmark=config.benchmark,
            config={"eval": asdict(config), "runner": asdict(runner_config)},
            reward_spec={"f1": "token F1 vs gold (PROTOCOL.md normalisation)", "em": "exact match",
                         "total": "f1"})
    else:
        store.update_run(run_id, status="running")
    done = store.trace_item_ids(run_id)
    todo = [item for item in agent_items if item.item_id not in done]
    runner = AgentRunner(backend, tools, runner_config, store=store, run_id=run_id, score=_scorer(config.benchmark))
    for start in range(0, len(todo), config.batch_items):
        runner.run(todo[start:start + config.batch_items])
        if on_progress:
            on_progress(len(done) + start + len(todo[start:start + config.batch_items]), len(agent_items))
    report = summarize(store, run_id, items, config.benchmark)
    _finish(store, run_id, report)
    return run_id


def summarize(store: Store, run_id: str, items: list[BenchmarkItem], benchmark: str) -> ScoreReport:
    """Score a run's first-sample answers against the benchmark, in benchmark order."""
    answers = {}
    for row in store.list_traces(run_id=run_id, limit=10**9):
        if row["sample_index"] == 0:
            answers[row["item_id"]] = row["final_answer"]
    missing = [item.id for item in items if str(item.id) not in answers]
    if missing:
        raise ValueError(f"run {run_id} has no trace for items {missing[:5]}; resume it to finish")
    predictions = [{"id": item.id, "gt": item.answers, "pred_answer": answers[str(item.id)]} for item in items]
    return score_predictions(predictions, benchmark, reference=items)


def _finish(store: Store, run_id: str, report: ScoreReport) -> None:
    """Record the scores as metrics and summary; only now is the run marked succeeded."""
    summary = dict(report.to_json())
    store.log_metrics(run_id, 0, {key: value for key, value in summary.items() if key != "n"})
    summary["per_type"] = {name: asdict(group) for name, group in report.per_type.items()}
    if report.notes or report.warnings:
        summary["notes"] = report.notes + report.warnings
    store.update_run(run_id, status="succeeded", summary=summary)


def import_predictions(store: Store, path: str | Path, benchmark: str, name: str) -> tuple[str, ScoreReport]:
    """Score a result file as the paper wrote it and store it as an 'imported' run with per-item traces.

    Each item becomes a trace: its question (`query` / `question`), gold
    answers and prediction, its F1/EM, and every other key of the item as
    trace metadata. An item without an id is known by its position.
    """
    predictions = load_predictions(path)
    report = score_predictions(predictions, benchmark)
    items = validate_predictions(predictions, source=str(path))
    run_id = store.create_run(name, "imported", benchmark=benchmark, status="running",
                              config={"source": str(path)}, reward_spec={"f1": "token F1", "em": "exact match"})
    traces = []
    for raw, item, scored in zip(predictions, items, report.per_item):
        extra = {key: value for key, value in item.items() if key not in ("id", "gt", "pred_answer")}
        question = item.get("query") or item.get("question")
        traces.append(Trace(
            question=question if isinstance(question, str) else f"item {item['id']}", gold=item["gt"],
            final_answer=item["pred_answer"], stop_reason="answered" if item["pred_answer"] is not None else "error",
            run_id=run_id, item_id=str(item["id"]), model_id=name, protocol="imported",
            rewards={"f1": scored.f1, "em": scored.em, "total": scored.f1},
            metadata={"position": scored.position, "split": scored.split, "types": scored.types,
                      "id_from_position": "id" not in raw, "item": extra}))
    store.save_traces(traces)
    _finish(store, run_id, report)
    return run_id, report
