"""Eval tab: run a benchmark as a background job, follow it, read its per-split / per-type scores; import results.

An evaluation from the UI is a job running `python -m workbench eval ...
--run-id R` with a run id chosen here, so the tab can follow the run (its
traces while running, its summary when done) and the job keeps going if the
browser closes. Plain callbacks (`eval_configs`, `eval_command`,
`launch_eval`, `split_table`, `type_table`, `eval_detail`, `import_result`)
are tested without a browser; `build` wraps them. The job list, progress
bar and log tail share the Train tab's helpers; a gr.Timer (on while the tab
is open) polls only job rows changed since the last poll.
"""

import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tools.search import BACKENDS as SEARCH_BACKENDS
from tools.search import MODES as SEARCH_MODES
from trainers.service import LaunchedJob
from workbench import jobs, protocol
from workbench.agent.runner import RunnerConfig
from workbench.benchmarks.evaluation import DEFAULT_TOOLS, EvalConfig, import_predictions
from workbench.benchmarks.loaders import BENCHMARK_FORMATS, load_benchmark
from workbench.file_roots import confine, looks_like_a_path
from workbench.jobs.watch import JobWatch
from workbench.store import Store
from workbench.ui import jobs_panel, render
from workbench.ui.context import UIContext
from workbench.ui.forms import FieldSpec, build_form, form_values
from workbench.ui.jobs_panel import JOB_HEADERS, poll_jobs, progress_html, running_note, tail_lines

POLL_SECONDS = 2.0
EVAL_FIELDS = ("benchmark", "data", "images", "model", "adapter", "limit", "name", "corpus", "search_backend",
               "search_mode")  # what `python -m workbench eval` takes (batch_items it does not)
EVAL_MAIN = ("benchmark", "data", "images", "model", "adapter", "limit")
RUNNER_FIELDS = ("tools", "protocol", "layout", "max_turns", "samples", "temperature", "max_new_tokens", "seed")
PATH_FIELDS = ("data", "images", "adapter", "corpus")  # made absolute: the job runs in the repository folder
PATH_LABELS = {"data": "benchmark file", "images": "image folder", "adapter": "adapter folder",
               "corpus": "search corpus"}
SPLIT_HEADERS = ["split", "F1 %", "EM %"]
TYPE_HEADERS = ["type", "n", "F1 %", "EM %"]
SPECS = {"benchmark": FieldSpec(choices=list(BENCHMARK_FORMATS)),
         "search_backend": FieldSpec(choices=list(SEARCH_BACKENDS)),
         "search_mode": FieldSpec(choices=list(SEARCH_MODES)),
         "tools": FieldSpec(choices=list(protocol.TOOL_ARGUMENT)),
         "protocol": FieldSpec(choices=list(protocol.PROTOCOLS)),
         "layout": FieldSpec(choices=list(protocol.LAYOUTS)), "max_turns": FieldSpec(minimum=1, maximum=20, step=1)}
RUNNER_DEFAULTS = {"tools": DEFAULT_TOOLS["mat-coding"], "max_new_tokens": 256}


# -- launching --------------------------------------------------------------------------------
def _confined(name: str, value: str | None) -> str | None:
    """A path from the form made absolute inside the allowed folders (file_roots); empty stays empty."""
    if not value or not str(value).strip():
        return value
    return confine(str(value).strip(), PATH_LABELS[name])


def eval_configs(values: dict[str, Any]) -> tuple[EvalConfig, RunnerConfig]:
    """EvalConfig and RunnerConfig from form values by field name; ValueError says what is wrong.

    Paths are confined to the allowed folders (file_roots) before anything looks at the files.
    """
    eval_values = {name: values[name] for name in EVAL_FIELDS if name in values}
    runner_values = {name: values[name] for name in RUNNER_FIELDS if name in values}
    for name in PATH_FIELDS:
        if name in eval_values:
            eval_values[name] = _confined(name, eval_values[name])
    if looks_like_a_path(str(eval_values.get("model") or "").strip()):
        eval_values["model"] = confine(str(eval_values["model"]).strip(), "model folder")
    config = form_values(EvalConfig, list(eval_values), list(eval_values.values()))
    return config, form_values(RunnerConfig, list(runner_values), list(runner_values.values()))


def eval_command(config: EvalConfig, runner: RunnerConfig, run_id: str) -> list[str]:
    """The `python -m workbench eval` argv for the configs, writing to run `run_id`."""
    command = [sys.executable, "-m", "workbench", "eval", "--benchmark", config.benchmark, "--data", config.data,
               "--run-id", run_id, "--model", config.model, "--search-backend", config.search_backend,
               "--search-mode", config.search_mode, "--tools", ",".join(runner.tools), "--protocol",
               runner.protocol, "--layout", runner.layout, "--max-turns", str(runner.max_turns), "--samples",
               str(runner.samples), "--temperature", str(runner.temperature), "--max-new-tokens",
               str(runner.max_new_tokens), "--seed", str(runner.seed)]
    for flag, value in (("--images", config.images), ("--adapter", config.adapter), ("--limit", config.limit),
                        ("--corpus", config.corpus), ("--name", config.name)):
        if value not in (None, ""):
            command += [flag, str(value)]
    return command


def launch_eval(store: Store, config: EvalConfig, runner: RunnerConfig) -> LaunchedJob:
    """Check the benchmark file (every item, before any job exists) and submit the evaluation job."""
    items = load_benchmark(config.benchmark, config.data, config.images)[: config.limit]
    if not items:
        raise ValueError(f"{config.data} holds no {config.benchmark} items")
    imageless = [str(item.id) for item in items if item.image is None]
    if imageless:
        raise ValueError(f"items {', '.join(imageless[:5])} have no image; the agent needs one per item")
    if "search" in runner.tools and config.search_backend == "local" and not config.corpus:
        raise ValueError("the search tool with the local backend needs a corpus (a JSONL file or folder); set "
                         "Corpus, choose the serpapi backend, or untick search")
    run_id = uuid.uuid4().hex[:12]
    command = eval_command(config, runner, run_id)
    job_config = {"eval": asdict(config), "runner": {**asdict(runner), "tools": list(runner.tools)},
                  "items": len(items)}
    job_id = jobs.submit(store, "eval", job_config, command, run_id=run_id)
    return LaunchedJob(job_id, run_id, command)


# -- scores -----------------------------------------------------------------------------------
def split_table(summary: dict | None) -> pd.DataFrame:
    """All / simple / hard F1 and EM (percent) of a run summary."""
    if not summary or "all_f1" not in summary:
        return pd.DataFrame([], columns=SPLIT_HEADERS)
    rows = [[f"all (n={summary.get('n', '?')})", summary["all_f1"], summary["all_em"]]]
    for split in ("simple", "hard"):
        if summary.get(f"{split}_f1") is not None:
            rows.append([split, summary[f"{split}_f1"], summary[f"{split}_em"]])
    return pd.DataFrame(rows, columns=SPLIT_HEADERS)


def type_table(summary: dict | None) -> pd.DataFrame:
    """Per degradation type (MAT-Coding) n, F1 and EM."""
    groups = (summary or {}).get("per_type") or {}
    rows = [[name, group["n"], round(group["f1"], 2), round(group["em"], 2)] for name, group in sorted(groups.items())]
    return pd.DataFrame(rows, columns=TYPE_HEADERS)


def score_notes(summary: dict | None, benchmark: str | None) -> str:
    """Markdown under the score tables: why a table is empty, and how the file was read.

    >>> score_notes({"all_f1": 50.0, "per_type": {}}, "multihop").splitlines()[0]
    '- No simple/hard split: multi-hop benchmarks are reported over all items.'
    """
    if not summary or "all_f1" not in summary:
        return ""
    lines = []
    if benchmark == "multihop":
        lines.append("No simple/hard split: multi-hop benchmarks are reported over all items.")
    if not summary.get("per_type"):
        if benchmark == "mat-coding":
            lines.append("No per-type table: the items carry no degradation `type` labels (the released result "
                         "files hold only id, gt and pred_answer); an evaluation run on a MAT-Coding file has them.")
        else:
            lines.append("No per-type table: degradation types exist only for MAT-Coding.")
    lines += [f"{note[0].upper()}{note[1:]}." for note in summary.get("notes") or []]
    return "\n".join(f"- {line}" for line in lines)


@dataclass
class EvalSession:
    watch: JobWatch = field(default_factory=lambda: JobWatch(("eval",)))
    shown_job: str | None = None
    shown_log: str | None = None
    shown_summary: str | None = None  # run status the score tables were drawn for


@dataclass
class EvalDetail:
    """What the tab shows for the selected eval job; None fields are unchanged since the last poll."""

    status: str
    progress: str
    log: str | None = None
    splits: pd.DataFrame | None = None
    types: pd.DataFrame | None = None
    notes: str | None = None


def _eval_status(job: dict, run: dict | None, done: int, total: int) -> str:
    setup = job["config"].get("eval", {})
    lines = [f"**Eval job {job['id']}** · **{job['status']}** · {setup.get('benchmark')} "
             f"`{Path(setup.get('data') or '?').name}` · model `{setup.get('model')}`",
             f"Run `{job['run_id']}`: {done} of {total} traces" + (f" · run {run['status']}" if run else "")]
    if job["error"]:
        lines.append(f"Error: {job['error']}")
    if run and run["status"] == "succeeded":
        summary = run["summary"] or {}
        lines.append(f"**F1 {summary.get('all_f1')} · EM {summary.get('all_em')}** over {summary.get('n')} items")
    return "\n\n".join(lines)


def eval_detail(store: Store, session: EvalSession, job_id: str, force: bool = False) -> EvalDetail:
    """Status with trace count, progress bar, and log / score tables when they changed (or `force`)."""
    job = store.get_job(job_id)
    if job is None or job["kind"] != "eval":
        raise ValueError(f"no eval job {job_id!r}; pick one from the list")
    force = force or job_id != session.shown_job
    session.shown_job = job_id
    run = store.get_run(job["run_id"]) if job["run_id"] else None
    samples = (job["config"].get("runner") or {}).get("samples") or 1
    total = (job["config"].get("items") or 0) * samples
    done = store.count_traces(job["run_id"]) if job["run_id"] else 0
    fraction = 1.0 if job["status"] == "succeeded" else (done / total if total else 0.0)
    detail = EvalDetail(_eval_status(job, run, done, total), progress_html(
        job, fraction, f"{done}/{total} traces" if done else running_note(job, f"0/{total} traces")))
    log = tail_lines(jobs.log_tail(store, job_id))
    if force or log != session.shown_log:
        detail.log = session.shown_log = log
    run_state = run["status"] if run else None
    if force or run_state != session.shown_summary:
        session.shown_summary = run_state
        summary = run["summary"] if run and run_state == "succeeded" else None
        detail.splits, detail.types = split_table(summary), type_table(summary)
        detail.notes = score_notes(summary, run["benchmark"] if run else None)
    return detail


def import_result(store: Store, path: str | None, benchmark: str, name: str | None) -> tuple[str, dict]:
    """Score a result file ({[id,] gt, pred_answer}) and store it as an 'imported' run; returns (run id, summary)."""
    if not path:
        raise ValueError("upload a result file (JSON list or JSON Lines of {[id,] gt, pred_answer}) first")
    path = confine(path, "result file")
    run_id, _ = import_predictions(store, path, benchmark, (name or "").strip() or f"imported {Path(path).stem}")
    return run_id, store.get_run(run_id)["summary"]


# -- Gradio ----------------------------------------------------------------------------------
@dataclass
class EvalTab:
    timer: gr.Timer
    refresh_fn: Any
    refresh_inputs: list
    refresh_outputs: list
    form_names: list[str]  # field names of the launch inputs, in order


def build(ctx: UIContext) -> EvalTab:
    store = ctx.store
    state = gr.State(None, time_to_live=24 * 3600)
    timer = gr.Timer(POLL_SECONDS, active=False)
    controls: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=3):
            controls.update(build_form(EvalConfig, SPECS, only=EVAL_MAIN))
        with gr.Column(scale=2):
            upload = gr.File(label="…or upload the benchmark file", file_types=[".json", ".jsonl"], height=120,
                             elem_id="ev-upload")
            controls.update(build_form(RunnerConfig, SPECS, RUNNER_DEFAULTS, only=("tools", "max_new_tokens")))
    with gr.Accordion("More settings: run name, search, rollout", open=False):
        controls.update(build_form(EvalConfig, SPECS, only=tuple(n for n in EVAL_FIELDS if n not in EVAL_MAIN)))
        controls.update(build_form(RunnerConfig, SPECS, RUNNER_DEFAULTS,
                                   only=tuple(n for n in RUNNER_FIELDS if n not in ("tools", "max_new_tokens"))))
    names = list(controls)
    with gr.Row():
        launch = gr.Button("Run evaluation as a job", variant="primary", elem_id="ev-launch")
        refresh = gr.Button("Refresh jobs", elem_id="ev-refresh")
    message = gr.Markdown(elem_id="ev-message")
    table = gr.Dataframe(headers=JOB_HEADERS, label="Evaluation jobs (click one)", interactive=False, max_height=220)
    with gr.Row():
        job_id = gr.Textbox(label="Selected job", scale=4, elem_id="ev-job-id")
        cancel = gr.Button("Cancel job", variant="stop", scale=1, elem_id="ev-cancel")
    progress = gr.HTML(progress_html(None), elem_id="ev-progress")
    status = gr.Markdown(elem_id="ev-status")
    with gr.Row():
        splits = gr.Dataframe(headers=SPLIT_HEADERS, label="Scores per split", interactive=False, elem_id="ev-splits")
        types = gr.Dataframe(headers=TYPE_HEADERS, label="Scores per type", interactive=False, elem_id="ev-types")
    notes = gr.Markdown(elem_id="ev-notes")
    log = gr.Textbox(label="Log tail", lines=8, max_lines=20, autoscroll=True, interactive=False)
    with gr.Accordion("Import an existing result file as a run", open=False):
        with gr.Row():
            result_file = gr.File(label="Result file ({[id,] gt, pred_answer} items)", file_types=[".json", ".jsonl"],
                                  height=120, elem_id="ev-import-file")
            with gr.Column():
                import_benchmark = gr.Radio(list(BENCHMARK_FORMATS), value="mat-coding", label="Benchmark")
                import_name = gr.Textbox(label="Run name (empty: from the file name)")
                import_button = gr.Button("Import and score", elem_id="ev-import")
        import_message = gr.Markdown(elem_id="ev-import-message")
        with gr.Row():
            import_splits = gr.Dataframe(headers=SPLIT_HEADERS, label="Scores per split", interactive=False)
            import_types = gr.Dataframe(headers=TYPE_HEADERS, label="Scores per type", interactive=False)
        import_notes = gr.Markdown(elem_id="ev-import-notes")

    detail_outputs = [status, progress, log, splits, types, notes]

    def on_launch(*values):
        try:
            config, runner = eval_configs(dict(zip(names, values)))
            launched = launch_eval(store, config, runner)
        except (ValueError, OSError) as exc:
            gr.Warning(str(exc))
            return f"**Not launched:** {render.esc(str(exc))}", gr.skip()
        return f"Launched eval job `{launched.job_id}` (run `{launched.run_id}`).", launched.job_id

    def poll(job_value, session, force):
        session = session or EvalSession()
        listing, chosen, picked = poll_jobs(store, session.watch, job_value, force)
        if not chosen:
            return (session, listing, picked, *(gr.skip() for _ in detail_outputs))
        try:
            detail = eval_detail(store, session, chosen, force=force)
        except ValueError as exc:
            return (session, listing, picked, str(exc), progress_html(None), gr.skip(), gr.skip(), gr.skip(),
                    gr.skip())
        optional = [detail.log, detail.splits, detail.types, detail.notes]
        return (session, listing, picked, detail.status, detail.progress,
                *(gr.skip() if v is None else v for v in optional))

    def on_refresh(job_value, session):
        return poll(job_value, session, True)

    def on_tick(job_value, session):
        return poll(job_value, session, False)

    def on_cancel(job_value):
        return jobs_panel.cancel_job_callback(store, job_value, kind="eval")

    def on_import(path, benchmark, name):
        try:
            run_id, summary = import_result(store, path, benchmark, name)
        except (ValueError, OSError) as exc:
            message = render.without_upload_paths(str(exc), path)
            gr.Warning(message)
            return f"**Not imported:** {render.esc(message)}", gr.skip(), gr.skip(), gr.skip()
        return (f"Imported as run `{run_id}`: F1 {summary.get('all_f1')} · EM {summary.get('all_em')} over "
                f"{summary.get('n')} items.", split_table(summary), type_table(summary),
                score_notes(summary, benchmark))

    def on_benchmark(benchmark):
        return list(DEFAULT_TOOLS.get(benchmark, ()))

    refresh_outputs = [state, table, job_id, *detail_outputs]
    upload.upload(lambda path: path, upload, controls["data"], api_visibility="private")
    controls["benchmark"].input(on_benchmark, controls["benchmark"], controls["tools"], api_visibility="private")
    launched = launch.click(on_launch, list(controls.values()), [message, job_id], api_name="launch_eval",
                            concurrency_limit=2, concurrency_id="eval-launch")
    launched.then(on_refresh, [job_id, state], refresh_outputs, api_visibility="private")
    jobs_panel.wire(jobs_panel.JobPanel(table, job_id, cancel, refresh, timer, state, message), on_refresh, on_tick,
                    on_cancel, refresh_outputs, api_kind="eval")
    import_button.click(on_import, [result_file, import_benchmark, import_name],
                        [import_message, import_splits, import_types, import_notes], api_name="import_results")
    return EvalTab(timer, on_refresh, [job_id, state], refresh_outputs, names)
