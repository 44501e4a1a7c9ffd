"""Playground tab: ask a question about uploaded or demo images and watch the agent's turns stream in.

Plain callbacks (`preview_images`, `accept_images`, `runner_config`,
`run_playground`) hold the logic and are tested without a browser; `build`
lays out the tab and wraps them for Gradio (user errors become gr.Warning /
gr.Error messages, never tracebacks). Uploads go through the store's image
intake (type, size, pixel checks). In a public demo, the model and adapter
are locked and each run is tagged with the visitor's browser-kept token.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from workbench import protocol
from workbench.agent.runner import RunnerConfig, question_problem
from workbench.database_file import disk_full_message, is_disk_full
from workbench.file_roots import PathNotAllowed, confine, looks_like_a_path
from workbench.images import ImageError, image_path, load_image
from workbench.trace import Trace
from workbench.ui import render
from workbench.ui.assets import demo_corpus, demo_image, demo_image_path, demo_images, demo_names
from workbench.ui.context import UIContext
from workbench.ui.deployment import DeploymentPolicy, PolicyError, Viewer
from workbench.ui.forms import FieldSpec, build_form, form_fields, form_values
from workbench.ui.images_view import preview_files

MODEL_CHOICES = ["demo", "tiny", "tiny-qwen3-vl"]
NO_DEMO = "(none: use my uploads)"
# The playground shows a few fields up front; the rest sit in an accordion.
MAIN_FIELDS = ("tools", "protocol", "max_turns", "max_new_tokens")
MAIN_ROWS = (("tools", "protocol"), ("max_turns", "max_new_tokens"))


class PlaygroundError(ValueError):
    """Something the user must fix before a run can start; the message says what."""


def _upload_paths(files: Any) -> list[str]:
    """Paths from a gr.File(file_count="multiple") value (paths, dicts or file objects)."""
    out = []
    for item in files or []:
        path = item.get("path") if isinstance(item, dict) else getattr(item, "name", item)
        if path:
            out.append(str(path))
    return out


def chosen_paths(files: Any, demo_name: str | None) -> list[str]:
    paths = _upload_paths(files)
    if demo_name and demo_name != NO_DEMO:
        paths.append(str(demo_image_path(demo_name)))
    return paths


def preview_images(files: Any, demo_name: str | None, question: str) -> tuple[list, list[str]]:
    """Gallery items for the chosen images (crop box drawn) and a message per rejected file."""
    good, problems = [], []
    for path in chosen_paths(files, demo_name):
        try:
            load_image(confine(path, "image"), Path(path).name)
            good.append(path)
        except (ImageError, PathNotAllowed) as exc:
            problems.append(str(exc))
    return preview_files(good, question or ""), problems


def accept_images(store, files: Any, demo_name: str | None) -> tuple[list[Path], list[str]]:
    """Store every chosen image through the intake checks; returns stored paths and rejections."""
    stored, problems, seen = [], [], set()
    for path in chosen_paths(files, demo_name):
        try:
            sha = store.put_image(confine(path, "image"), Path(path).name)
        except (ImageError, PathNotAllowed) as exc:
            problems.append(str(exc))
            continue
        if sha not in seen:
            seen.add(sha)
            stored.append(image_path(sha))
    return stored, problems


def demo_question(demo_name: str | None, current: str) -> str:
    """The demo's question when a demo image is picked and the box is empty or holds another demo's question."""
    demos = demo_images()
    typed = (current or "").strip()
    if demo_name in demos and (not typed or typed in {d.question for d in demos.values()}):
        return demos[demo_name].question
    return current


def demo_tools(demo_name: str | None, current: list[str]) -> list[str]:
    """The tool the demo's question needs (code or search), or the current choice for uploads."""
    if demo_name in demo_images():
        return [demo_image(demo_name).tool]
    return current


def config_specs(policy: DeploymentPolicy) -> dict[str, FieldSpec]:
    return {
        "tools": FieldSpec(choices=list(protocol.TOOL_ARGUMENT)),
        "protocol": FieldSpec(choices=list(protocol.PROTOCOLS)),
        "layout": FieldSpec(choices=list(protocol.LAYOUTS)),
        "max_turns": FieldSpec(minimum=1, maximum=policy.max_turns, step=1),
        "max_new_tokens": FieldSpec(minimum=16, maximum=policy.max_new_tokens, step=16),
        "samples": FieldSpec(minimum=1, maximum=policy.max_samples, step=1),
        "temperature": FieldSpec(minimum=0.0, maximum=2.0, step=0.05),
        "top_p": FieldSpec(minimum=0.05, maximum=1.0, step=0.05),
        "tool_workers": FieldSpec(minimum=1, maximum=8, step=1),
        "system_prompt": FieldSpec(visible=not policy.public_demo),
    }


PLAYGROUND_DEFAULTS = {"tools": ("code",), "max_new_tokens": 192, "layout": "chat"}  # what the demo model knows


def config_names() -> list[str]:
    return [f.name for f in form_fields(RunnerConfig)]


def runner_config(policy: DeploymentPolicy, values: list[Any] | tuple[Any, ...]) -> RunnerConfig:
    """The RunnerConfig from the form's values (in `config_names()` order), checked against the policy."""
    try:
        config = form_values(RunnerConfig, config_names(), values)
        policy.check_runner_config(config)
    except ValueError as exc:  # PolicyError is a ValueError too
        raise PlaygroundError(str(exc)) from exc
    return config


@dataclass
class PlaygroundUpdate:
    """One streamed state of a run: status line, live transcript, and ids once known."""

    status: str
    transcript: str
    run_id: str = ""
    trace_id: str = ""
    traces: list[Trace] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said once: skipped uploads, the code tool being off


def gold_for(demo_name: str | None, question: str, expected: str | None) -> tuple[list[str], list[str]]:
    """The gold answers (and gold problem labels) to score a run by: the typed expected answer, else the demo
    item's own when its question is asked as it is.

    >>> gold_for(None, "What is it?", " a cat ")
    (['a cat'], [])
    >>> gold_for(None, "What is it?", "")
    ([], [])
    """
    if expected and expected.strip():
        return [expected.strip()], []
    demos = demo_images()
    if demo_name in demos and demos[demo_name].question == question.strip():
        return [demos[demo_name].answer], list(demos[demo_name].problems)
    return [], []


def verdict(trace: Trace) -> str:
    """'right' / 'partly right' / 'wrong' for a scored trace, '' for one without gold."""
    if "f1" not in trace.rewards:
        return ""
    return "right" if trace.rewards.get("em", 0.0) >= 1.0 else "partly right" if trace.rewards["f1"] > 0 else "wrong"


def run_playground(ctx: UIContext, viewer: Viewer, files: Any, demo_name: str | None, question: str,
                   model: str, adapter: str | None, config: RunnerConfig, corpus: str | None = None,
                   search_mode: str = "cache-first", expected: str | None = None,
                   api_key: str | None = None) -> Iterator[PlaygroundUpdate]:
    """Validate, start a run tagged with the viewer, and yield an update after every turn.

    With a gold answer (typed, or the demo item's) the final answers are marked right or wrong.
    `api_key` is the visitor's own key for an openai:<model>@<url> endpoint the operator has not listed in
    WORKBENCH_OPENAI_BASE_URLS (the server's key never goes there): used for this run, never stored.

    Raises PlaygroundError with the sentence to show: a refused input, or "disk full" (the run is then
    marked failed with that reason as soon as space returns).
    """
    try:
        yield from _playground_updates(ctx, viewer, files, demo_name, question, model, adapter, config, corpus,
                                       search_mode, expected, api_key)
    except PlaygroundError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise PlaygroundError(disk_full_message()) from exc
        raise


def _playground_updates(ctx: UIContext, viewer: Viewer, files: Any, demo_name: str | None, question: str,
                        model: str, adapter: str | None, config: RunnerConfig, corpus: str | None,
                        search_mode: str, expected: str | None, api_key: str | None) -> Iterator[PlaygroundUpdate]:
    from workbench.agent import service as agent_service  # heavy (torch); imported on first run, not at app start

    question = (question or "").strip()
    if not question:
        raise PlaygroundError("type a question about the image first")
    if question_problem(question):
        raise PlaygroundError(question_problem(question))
    try:
        ctx.policy.check_model(model, adapter)
        ctx.policy.check_runner_config(config)
        if corpus and ctx.policy.public_demo:
            raise PolicyError("this public demo does not take a search corpus path")
        if adapter:
            adapter = confine(adapter, "adapter folder")
        if looks_like_a_path(model or ""):
            model = confine(model, "model folder")
        if corpus:
            corpus = confine(corpus, "search corpus")
    except (PolicyError, PathNotAllowed) as exc:
        raise PlaygroundError(str(exc)) from exc
    images, problems = accept_images(ctx.store, files, demo_name)
    if not images:
        raise PlaygroundError("; ".join(problems) or "no image: upload one or pick a demo image")
    corpus = corpus or str(demo_corpus())  # the shipped demo world answers the demo search questions
    notices = [f"skipped: {problem}" for problem in problems]
    if "code" in config.tools:
        from workbench.agent.tools import code_tool_status  # starts the shared sandbox once per process

        status = code_tool_status()
        if status.startswith("Code execution is off"):
            notices.append(status + " The question still runs; code turns report the tool as unavailable.")
    yield PlaygroundUpdate("loading the model …", render.transcript_html([]), warnings=notices)
    try:
        agent_service.get_backend(model, adapter or None, api_key)  # a model that cannot load: a plain error
    except (ValueError, OSError) as exc:
        raise PlaygroundError(f"could not load model {model!r}: {exc}") from exc
    live: dict[str, Trace] = {}
    gold, labels = gold_for(demo_name, question, expected)
    events = agent_service.stream_question(ctx.store, question, images, model=model, adapter=adapter or None,
                                           config=config, tags=viewer.run_tags(), gold=gold,
                                           problem_labels=labels, corpus=corpus, search_mode=search_mode,
                                           api_key=api_key)
    try:
        for event in events:
            live[event.trace.id] = event.trace
            traces = sorted(live.values(), key=lambda t: t.sample_index)
            finished = sum(t.stop_reason is not None for t in traces)
            status = (f"turn {event.turn.index + 1}: sample {event.trace.sample_index} "
                      f"{event.turn.action or 'parse error'} · {finished}/{config.samples} samples finished")
            yield PlaygroundUpdate(status, render.transcript_html(traces), event.trace.run_id, "", traces)
    except ValueError as exc:  # the service has marked the run failed
        raise PlaygroundError(str(exc)) from exc
    traces = sorted(live.values(), key=lambda t: t.sample_index)
    first = traces[0].id if traces else ""
    outcomes = ", ".join(f"sample {t.sample_index}: {t.stop_reason}" + (f" ({verdict(t)})" if verdict(t) else "")
                         for t in traces)
    run_id = traces[0].run_id if traces else ""
    yield PlaygroundUpdate(f"done · {outcomes} · opening the trace", render.transcript_html(traces), run_id,
                           first, traces)


def code_tool_line() -> str:
    """The Playground's line about the code tool: its isolation, or that code execution is off and why."""
    from workbench.agent.tools import code_tool_status  # starts the shared sandbox once per process

    return f"*Code tool:* {code_tool_status()}"


@dataclass
class PlaygroundTab:
    """Components other tabs wire to: the finished trace id and the run event."""

    trace_id: gr.Textbox
    run_event: Any
    isolation: gr.Markdown  # which isolation runs model code here, or why code execution is off
    isolation_fn: Any


def build(ctx: UIContext) -> PlaygroundTab:
    policy = ctx.policy
    with gr.Row():
        with gr.Column(scale=5):
            uploads = gr.File(label="Images", file_count="multiple", file_types=["image"],
                              elem_id="pg-uploads")
            demo = gr.Dropdown([NO_DEMO] + demo_names(), value=NO_DEMO, label="Demo image",
                               info="A held-out item of the demo world, with its question and tool.",
                               elem_id="pg-demo")
            preview = gr.Gallery(label="What the model will see (crop box in red)", columns=2, height=300,
                                 interactive=False, object_fit="contain", preview=False, fit_columns=False,
                                 elem_id="pg-preview")
        with gr.Column(scale=6):
            question = gr.Textbox(label="Question", lines=2, elem_id="pg-question",
                                  placeholder="Which way does the arrow point?")
            expected = gr.Textbox(label="Expected answer (optional)", elem_id="pg-expected",
                                  info="Marks the answer right or wrong (F1/EM and each reward component). "
                                       "Empty on a demo item: the item's own answer is used.")
            with gr.Row():
                model = gr.Dropdown(MODEL_CHOICES[:1] if policy.public_demo else MODEL_CHOICES, value="demo",
                                    label="Model", allow_custom_value=not policy.public_demo,
                                    interactive=not policy.public_demo,
                                    info="Only the shipped demo model runs in this public demo." if policy.public_demo
                                    else "demo = the shipped demo model; tiny = untrained; or a folder, hub id, "
                                         "openai:<model>@<url>")
                adapter = gr.Textbox(label="LoRA adapter folder", visible=not policy.public_demo)
            api_key = gr.Textbox(label="API key for this endpoint (optional, never stored)", type="password",
                                 visible=not policy.public_demo, elem_id="pg-api-key",
                                 info="For an openai:<model>@<url> endpoint of your own: the server's key goes "
                                      "only to the endpoints its operator listed (WORKBENCH_OPENAI_BASE_URLS).")
            specs = config_specs(policy)
            controls = {}
            for row_fields in MAIN_ROWS:
                with gr.Row():
                    controls.update(build_form(RunnerConfig, specs, PLAYGROUND_DEFAULTS, only=row_fields))
            with gr.Accordion("More rollout settings", open=False):
                corpus = gr.Textbox(label="Search corpus (JSONL file or folder)", visible=not policy.public_demo,
                                    info="Empty: the demo world's corpus.")
                search_mode = gr.Radio(["cache-first", "live", "offline"], value="cache-first", label="Search mode")
                controls.update(build_form(RunnerConfig, specs, PLAYGROUND_DEFAULTS, exclude=MAIN_FIELDS))
            run = gr.Button("Run", variant="primary", elem_id="pg-run")
    status = gr.Markdown("Pick a demo image or upload one, then ask a question.", elem_id="pg-status")
    isolation = gr.Markdown(elem_id="pg-isolation")
    transcript = gr.HTML(render.transcript_html([]), elem_id="pg-transcript")
    with gr.Row():
        run_id = gr.Textbox(label="Run id", interactive=False)
        trace_id = gr.Textbox(label="Finished trace id", interactive=False, elem_id="pg-trace-id")
    names = config_names()

    def on_preview(files, demo_name, text):
        gallery, problems = preview_images(files, demo_name, text)
        for problem in problems:  # said once, when the files change; a run then only skips them
            gr.Warning(problem)
        return gallery

    def on_question(files, demo_name, text):  # redraws the crop box; the files' problems were already said
        return preview_images(files, demo_name, text)[0]

    def on_demo(demo_name, text, tools):
        return demo_question(demo_name, text), demo_tools(demo_name, tools)

    def on_run(request: gr.Request, files, demo_name, text, expected_answer, model_spec, adapter_dir, corpus_path,
               mode, key, *values):  # the request comes first: Gradio cannot inject a keyword after *values
        values, visitor = (values[:-1], values[-1]) if policy.public_demo else (values, None)  # token last
        viewer = ctx.viewer(request, visitor)
        if policy.public_demo and viewer.visitor is None:
            raise gr.Error("this page has no visitor token yet; reload it", print_exception=False)
        try:
            config = runner_config(policy, values)
            stream = run_playground(ctx, viewer, files, demo_name, text, model_spec, adapter_dir, config,
                                    corpus_path, mode, expected_answer, key if not policy.public_demo else None)
            for update in stream:
                for warning in update.warnings:
                    gr.Warning(warning)
                yield update.status, update.transcript, update.run_id, update.trace_id
        except PlaygroundError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    for trigger in (uploads.change, demo.change):
        trigger(on_preview, [uploads, demo, question], preview, api_visibility="private")
    question.blur(on_question, [uploads, demo, question], preview, api_visibility="private")
    demo.change(on_demo, [demo, question, controls["tools"]], [question, controls["tools"]],
                api_visibility="private")
    run_event = run.click(on_run, [uploads, demo, question, expected, model, adapter, corpus, search_mode, api_key,
                                   *[controls[n] for n in names], *ctx.visitor_inputs()],
                          [status, transcript, run_id, trace_id], api_name="run_playground",
                          concurrency_limit=policy.model_concurrency, concurrency_id="model")
    return PlaygroundTab(trace_id=trace_id, run_event=run_event, isolation=isolation, isolation_fn=code_tool_line)
