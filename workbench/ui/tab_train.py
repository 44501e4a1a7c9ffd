"""Train tab: a GRPO / SFT form generated from the job configs, the exact command, launch, and live jobs.

The form comes from `GrpoJobConfig` / `SftJobConfig` (help text from field
metadata): shared fields once, each kind's own fields in a group shown for
that kind. Plain callbacks (`train_config`, `command_preview`,
`launch_from_form`, `jobs_table`, `progress_html`, `job_detail`) are tested
without a browser; `build` wraps them. A gr.Timer (on while the tab is open)
polls every POLL_SECONDS: `JobWatch.poll` starts queued jobs, reconciles
dead ones and reads only job rows changed since the last poll; the selected
job's log tail and reward curves are redrawn only when they changed. Jobs
are database rows, so a reloaded page re-attaches to running ones.
The job-list helpers here are shared with the Eval tab.
"""

import json
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from tools.search import BACKENDS as SEARCH_BACKENDS
from tools.search import MODES as SEARCH_MODES
from trainers.config import (
    CONFIG_CLASSES,
    DEEPSPEED_STAGES,
    FINETUNE_MODES,
    GRPO_MODES,
    LOSS_TYPES,
    LR_SCHEDULERS,
    PRECISIONS,
    SCALE_REWARDS,
    TrainJobConfig,
)
from trainers.demo_data import click_to_train_config
from trainers.launch import format_command
from trainers.service import (
    TRAIN_KINDS,
    LaunchedJob,
    launch_training,
    prepare_demo_training,
    preview_command,
    resume_training,
)
from workbench import jobs, protocol
from workbench.file_roots import confine, looks_like_a_path
from workbench.jobs.watch import JobWatch, job_age
from workbench.run_charts import LEARNING_NAMES, MetricSeriesCache, tool_rate_name
from workbench.store import Store
from workbench.ui import figures, jobs_panel, render
from workbench.ui.context import UIContext
from workbench.ui.forms import FieldSpec, build_form, field_label, form_fields, form_values
from workbench.ui.jobs_panel import JOB_HEADERS, clock, poll_jobs, progress_html, running_note, tail_lines

POLL_SECONDS = 2.0
KIND_CHOICES = [("GRPO: reinforcement learning with the Visual-ARFT rewards", "grpo"),
                ("SFT: cold start on recorded traces", "sft")]
# lists of paths / run ids: one per line
LINE_LIST_FIELDS = ("data_files", "eval_data_files", "trace_runs", "trace_files")
PATH_LIST_FIELDS = ("data_files", "eval_data_files", "trace_files")
PATH_FIELDS = ("image_root", "search_corpus", "init_adapter")
JSON_FIELDS = ("rewards", "trl_args")
COMMON_MAIN = ("model", "finetune", "run_name")
OWN_MAIN = {"grpo": ("data_files", "mode", "tools", "protocol", "max_steps", "num_generations",
                     "max_completion_length"),
            "sft": ("trace_runs", "trace_files", "tools", "protocol", "max_steps", "num_train_epochs")}
SPECS = {
    "finetune": FieldSpec(choices=list(FINETUNE_MODES)), "precision": FieldSpec(choices=list(PRECISIONS)),
    "lr_scheduler_type": FieldSpec(choices=list(LR_SCHEDULERS)),
    "deepspeed_stage": FieldSpec(choices=list(DEEPSPEED_STAGES)), "mode": FieldSpec(choices=list(GRPO_MODES)),
    "tools": FieldSpec(choices=list(protocol.TOOL_ARGUMENT)), "protocol": FieldSpec(choices=list(protocol.PROTOCOLS)),
    "loss_type": FieldSpec(choices=list(LOSS_TYPES)), "scale_rewards": FieldSpec(choices=list(SCALE_REWARDS)),
    "search_backend": FieldSpec(choices=list(SEARCH_BACKENDS)), "search_mode": FieldSpec(choices=list(SEARCH_MODES)),
}


class TrainFormError(ValueError):
    """A form value that cannot become a config; the message names the field."""


# -- the form as plain data -------------------------------------------------------------------
def common_fields() -> list[str]:
    return [f.name for f in form_fields(TrainJobConfig)]


def own_fields(kind: str) -> list[str]:
    shared = set(common_fields())
    return [f.name for f in form_fields(CONFIG_CLASSES[kind]) if f.name not in shared]


def parse_lines(text: Any) -> list[str]:
    """One entry per non-empty line (a list passes through).

    >>> parse_lines(" a.json \\n\\n b.json"), parse_lines(["x"]), parse_lines(None)
    (['a.json', 'b.json'], ['x'], [])
    """
    if isinstance(text, (list, tuple)):
        return [str(v).strip() for v in text if str(v).strip()]
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def parse_json_field(name: str, text: Any) -> dict:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(str(text or "").strip() or "{}")
    except json.JSONDecodeError as exc:
        raise TrainFormError(f"{field_label(name)}: not valid JSON ({exc.msg}); e.g. {{\"format\": 1.0}}") from None
    if not isinstance(value, dict):
        raise TrainFormError(f"{field_label(name)}: give a JSON object such as {{\"format\": 1.0}}")
    return value


def train_config(kind: str, values: dict[str, Any]) -> TrainJobConfig:
    """The job config of `kind` from form values by field name (text fields still as typed)."""
    if kind not in CONFIG_CLASSES:
        raise TrainFormError(f"pick a job kind: {', '.join(TRAIN_KINDS)}")
    cls = CONFIG_CLASSES[kind]
    wanted = set(common_fields()) | set(own_fields(kind))
    raw = {name: value for name, value in values.items() if name in wanted}
    parsed = {name: parse_lines(raw.pop(name)) for name in LINE_LIST_FIELDS if name in raw}
    parsed.update({name: parse_json_field(name, raw.pop(name)) for name in JSON_FIELDS if name in raw})
    # Paths from the browser stay inside the allowed folders, checked before anything looks at the file.
    for name in PATH_LIST_FIELDS:
        if name in parsed:
            parsed[name] = [confine(path, field_label(name)) for path in parsed[name]]
    for name in PATH_FIELDS:
        if isinstance(raw.get(name), str) and raw[name].strip():
            raw[name] = confine(raw[name].strip(), field_label(name))
    if looks_like_a_path(str(raw.get("model") or "").strip()):
        raw["model"] = confine(str(raw["model"]).strip(), "model folder")
    names = list(raw)
    return form_values(cls, names, [raw[n] for n in names], **parsed)


def command_preview(kind: str, values: dict[str, Any]) -> str:
    """The command the form would launch, or what to fix first (as a shell comment)."""
    try:
        return preview_command(train_config(kind, values))
    except ValueError as exc:
        return f"# not ready to launch: {exc}"


def launch_from_form(store: Store, kind: str, values: dict[str, Any]) -> LaunchedJob:
    """Build, check (preflight) and submit; ValueError says what to change."""
    return launch_training(store, train_config(kind, values))


def demo_values(demo: dict[str, str]) -> dict[tuple[str, str], Any]:
    """Form values (scope, field) for a click-to-train run: `trainers.demo_data.click_to_train_config` (LoRA-GRPO
    from the demo start adapter) on the demo data, and a cold-start SFT on its expert traces for the SFT form."""
    grpo = click_to_train_config("demo", demo["items_file"], demo["eval_file"], init_adapter=demo.get("start_adapter"))
    shared = set(common_fields())
    values = {("common" if name in shared else "grpo", name): form_text(name, getattr(grpo, name))
              for name in common_fields() + own_fields("grpo")}
    values.update({("sft", "trace_runs"): demo["expert_run"], ("sft", "max_steps"): 20})
    return values


def form_text(name: str, value: Any) -> Any:
    """A config value as its form control shows it: path lists one per line, JSON fields as JSON text.

    >>> form_text("data_files", ["a.json", "b.json"]), form_text("rewards", {"format": 1.0}), form_text("beta", 0.1)
    ('a.json\\nb.json', '{"format": 1.0}', 0.1)
    """
    if name in LINE_LIST_FIELDS:
        return "\n".join(value or [])
    if name in JSON_FIELDS:
        return json.dumps(value or {})
    return value


def job_markdown(job: dict, run: dict | None) -> str:
    lines = [f"**Job {job['id']}** · {job['kind']} · **{job['status']}** · created {clock(job['created_at'])} "
             f"({job_age(job)})"]
    if job["status"] == "running" and job.get("note"):
        lines.append(f"Now: {job['note']}")
    if job["run_id"]:
        lines.append(f"Run `{job['run_id']}`" + (f" ({run['name']}, {run['status']})" if run else " (not started yet)"))
    if job["error"]:
        lines.append(f"Error: {job['error']}")
    if job["exit_code"] is not None:
        lines.append(f"Exit code: {job['exit_code']}")
    lines.append(f"```\n{format_command(job['command'])}\n```")
    return "\n\n".join(lines)


@dataclass
class TrainSession:
    """One viewer's job rows, metric histories of the runs they looked at, and what is on screen."""

    watch: JobWatch = field(default_factory=lambda: JobWatch(TRAIN_KINDS))
    cache: MetricSeriesCache = field(default_factory=MetricSeriesCache)
    shown_job: str | None = None
    shown_log: str | None = None


@dataclass
class JobDetail:
    """What the tab shows for the selected job; None fields are unchanged since the last poll."""

    status: str
    progress: str
    log: str | None = None
    figures: tuple | None = None


def _curve_metric(names: list[str]) -> str | None:
    for preferred in ("reward", "loss"):
        if preferred in names:
            return preferred
    return names[0] if names else None


def _last_step(cache: MetricSeriesCache, run_id: str) -> int:
    return max((series.steps[-1] for series in cache.series.get(run_id, {}).values() if series.steps), default=0)


def job_detail(store: Store, session: TrainSession, job_id: str, force: bool = False) -> JobDetail:
    """Status, progress bar (step of max steps), and the log / curves when they changed (or `force`)."""
    job = store.get_job(job_id)
    if job is None:
        raise ValueError(f"no job {job_id!r}; pick one from the list")
    force = force or job_id != session.shown_job
    session.shown_job = job_id
    run_id = job["run_id"]
    run = store.get_run(run_id) if run_id else None
    changed = session.cache.poll(store, [run_id]) if run_id else set()
    budget = (job["config"] or {}).get("max_steps") or 0
    note = running_note(job, f"step {_last_step(session.cache, run_id)} of {budget}" if run_id and budget else "")
    log = tail_lines(jobs.log_tail(store, job_id))
    detail = JobDetail(job_markdown(job, run), progress_html(job, note=note))
    if force or log != session.shown_log:
        detail.log = session.shown_log = log
    if force or changed:
        labels = {run_id: run["name"] if run else run_id} if run_id else {}
        runs = [run_id] if run_id else []
        metric = _curve_metric(session.cache.names(runs))
        waiting = ("No metrics yet: the first point appears after the first training step, or after the "
                   "step-0 evaluation when the job measures a held-out reward.")
        names = session.cache.names(runs)
        if any(name in names for name in LEARNING_NAMES):  # a held-out evaluation: tool use and answer F1
            first = figures.tool_rate_figure(session.cache, runs, labels, tool_rate_name(names), 0.0)
        else:
            first = figures.metric_figure(session.cache, runs, labels, metric, 0.0, empty_message=waiting)
        detail.figures = (first, figures.rewards_figure(session.cache, runs, labels, 0.0))
    return detail


# -- Gradio ----------------------------------------------------------------------------------
def _text_field(cls: type, name: str, value: Any, lines: int, note: str) -> gr.Textbox:
    help_text = next(f.metadata.get("help", "") for f in form_fields(cls) if f.name == name)
    return gr.Textbox(value=value, label=field_label(name), info=f"{help_text} {note}".strip(), lines=lines)


def _own_form(kind: str) -> dict[str, gr.components.Component]:
    cls = CONFIG_CLASSES[kind]
    main, rest = OWN_MAIN[kind], [n for n in own_fields(kind) if n not in OWN_MAIN[kind]]
    controls: dict[str, Any] = {}

    def section(names):
        for name in names:
            if name in LINE_LIST_FIELDS:
                controls[name] = _text_field(cls, name, "", 2, "One per line.")
            elif name in JSON_FIELDS:
                controls[name] = _text_field(cls, name, "{}", 2, "JSON object.")
        plain = tuple(n for n in names if n not in LINE_LIST_FIELDS + JSON_FIELDS)
        controls.update(build_form(cls, SPECS, only=plain))

    section(main)
    with gr.Accordion(f"More {kind.upper()} settings", open=False):
        section(rest)
    return controls


@dataclass
class TrainTab:
    timer: gr.Timer
    refresh_fn: Any
    refresh_inputs: list
    refresh_outputs: list
    form_keys: list[tuple[str, str]]  # (scope, field) of the form inputs after the kind, in order


def build(ctx: UIContext) -> TrainTab:
    store = ctx.store
    state = gr.State(None, time_to_live=24 * 3600)
    timer = gr.Timer(POLL_SECONDS, active=False)
    with gr.Row():
        kind = gr.Radio(KIND_CHOICES, value="grpo", label="Job kind", scale=4, elem_id="tn-kind")
        demo = gr.Button("Fill in a demo run (LoRA-GRPO: the demo model learns to use its code tool)", scale=1,
                         elem_id="tn-demo")
    controls: dict[tuple[str, str], Any] = {}
    with gr.Row():
        controls.update({("common", n): c for n, c in build_form(TrainJobConfig, SPECS, only=COMMON_MAIN).items()})
    with gr.Column(visible=True) as grpo_group:
        controls.update({("grpo", n): c for n, c in _own_form("grpo").items()})
    with gr.Column(visible=False) as sft_group:
        controls.update({("sft", n): c for n, c in _own_form("sft").items()})
    with gr.Accordion("Model, LoRA, optimiser, checkpoints and GPUs", open=False):
        rest = tuple(n for n in common_fields() if n not in COMMON_MAIN)
        controls.update({("common", n): c for n, c in build_form(TrainJobConfig, SPECS, only=rest).items()})
    keys = list(controls)
    preview = gr.Code(command_preview("grpo", {}), language="shell", interactive=False, elem_id="tn-command",
                      label="Exact command (the run id is chosen at launch)")
    with gr.Row():
        launch = gr.Button("Launch", variant="primary", elem_id="tn-launch")
        preview_button = gr.Button("Update command", elem_id="tn-preview")
        refresh = gr.Button("Refresh jobs", elem_id="tn-refresh")
    message = gr.Markdown(elem_id="tn-message")
    table = gr.Dataframe(headers=JOB_HEADERS, label="Training jobs (click one)", interactive=False, max_height=260,
                         elem_id="tn-jobs")
    with gr.Row():
        job_id = gr.Textbox(label="Selected job", scale=3, elem_id="tn-job-id")
        cancel = gr.Button("Cancel job", variant="stop", scale=1, elem_id="tn-cancel")
        resume_steps = gr.Number(0, label="Resume with max steps (0: same)", precision=0, minimum=0, scale=1)
        resume = gr.Button("Resume from last checkpoint", scale=1, elem_id="tn-resume")
    progress = gr.HTML(progress_html(None), elem_id="tn-progress")
    status = gr.Markdown(elem_id="tn-status")
    with gr.Row():
        curve = gr.Plot(label="Reward (or loss) vs step", elem_id="tn-curve")
        components = gr.Plot(label="Reward components")
    log = gr.Textbox(label="Log tail", lines=12, max_lines=24, autoscroll=True, interactive=False, elem_id="tn-log")

    def values_of(kind_value, flat):
        by_key = dict(zip(keys, flat))
        scopes = ("common", kind_value)
        return {name: value for (scope, name), value in by_key.items() if scope in scopes}

    def on_preview(kind_value, *flat):
        return command_preview(kind_value, values_of(kind_value, flat))

    def on_kind(kind_value, *flat):
        return (gr.Column(visible=kind_value == "grpo"), gr.Column(visible=kind_value == "sft"),
                on_preview(kind_value, *flat))

    def on_launch(kind_value, *flat):
        try:
            launched = launch_from_form(store, kind_value, values_of(kind_value, flat))
        except (ValueError, OSError) as exc:  # ConfigError / preflight: say what to change
            gr.Warning(str(exc))
            return f"**Not launched:** {render.esc(str(exc))}", gr.skip()
        return f"Launched job `{launched.job_id}` (run `{launched.run_id}`).", launched.job_id

    def on_demo():
        filled = demo_values(prepare_demo_training(store))
        return tuple(filled.get(key, gr.skip()) for key in keys)

    detail_outputs = [status, progress, log, curve, components]

    def show(detail: JobDetail) -> tuple:
        plots = tuple(chart.plot() for chart in detail.figures) if detail.figures else (gr.skip(), gr.skip())
        return (detail.status, detail.progress, gr.skip() if detail.log is None else detail.log, *plots)

    def on_job_chosen(job_id_value):
        """The form as the chosen job was launched (kind and every setting): a reloaded page shows its job."""
        job = store.get_job(job_id_value or "")
        if job is None or job["kind"] not in CONFIG_CLASSES:
            return tuple(gr.skip() for _ in range(len(keys) + 2))
        values = {name: value for name, value in (job["config"] or {}).items() if name != "kind"}
        return (job["kind"], *(form_text(name, values[name]) if scope in ("common", job["kind"]) and name in values
                               else gr.skip() for scope, name in keys), command_preview(job["kind"], values))

    def poll(job_value, session, force):
        session = session or TrainSession()
        listing, chosen, picked = poll_jobs(store, session.watch, job_value, force)
        if not chosen:
            return (session, listing, picked, *(gr.skip() for _ in detail_outputs))
        try:
            return (session, listing, picked, *show(job_detail(store, session, chosen, force=force)))
        except ValueError as exc:
            return (session, listing, picked, str(exc), progress_html(None), gr.skip(), gr.skip(), gr.skip())

    def on_refresh(job_value, session):
        return poll(job_value, session, True)

    def on_tick(job_value, session):
        return poll(job_value, session, False)

    def on_cancel(job_value):
        return jobs_panel.cancel_job_callback(store, job_value)

    def on_resume(job_value, steps):
        try:
            resumed = resume_training(store, job_value or "", max_steps=int(steps) if steps else None)
        except ValueError as exc:
            gr.Warning(str(exc))
            return f"**Not resumed:** {render.esc(str(exc))}", gr.skip()
        start = (f"from the checkpoint at step {resumed.resumed_from_step}" if resumed.resumed_from_step is not None
                 else "from step 0 (no checkpoint was saved)")
        return f"Resumed run `{resumed.run_id}` as job `{resumed.job_id}`, {start}.", resumed.job_id

    form_inputs = [kind, *controls.values()]
    refresh_outputs = [state, table, job_id, *detail_outputs]
    kind.change(on_kind, form_inputs, [grpo_group, sft_group, preview], api_visibility="private")
    for control in controls.values():
        if isinstance(control, (gr.Textbox, gr.Number)):
            control.blur(on_preview, form_inputs, preview, api_visibility="private")
            control.submit(on_preview, form_inputs, preview, api_visibility="private")
        else:
            control.input(on_preview, form_inputs, preview, api_visibility="private")
    preview_button.click(on_preview, form_inputs, preview, api_name="preview_training_command")
    job_id.change(on_job_chosen, job_id, [*form_inputs, preview], api_visibility="private")
    demo.click(on_demo, None, list(controls.values()), api_name="fill_demo_training").then(
        on_preview, form_inputs, preview, api_visibility="private")
    launched = launch.click(on_launch, form_inputs, [message, job_id], api_name="launch_training",
                            concurrency_limit=1, concurrency_id="train-launch")
    launched.then(on_refresh, [job_id, state], refresh_outputs, api_visibility="private")
    jobs_panel.wire(jobs_panel.JobPanel(table, job_id, cancel, refresh, timer, state, message), on_refresh, on_tick,
                    on_cancel, refresh_outputs, api_kind="training")
    resume.click(on_resume, [job_id, resume_steps], [message, job_id], api_name="resume_training_job").then(
        on_refresh, [job_id, state], refresh_outputs, api_visibility="private")
    return TrainTab(timer, on_refresh, [job_id, state], refresh_outputs, keys)
