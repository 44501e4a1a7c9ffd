"""The web app: builds the Gradio Blocks from one module per tab and launches it.

Tabs are modules `workbench/ui/tab_*.py`, each with `build(ctx)` returning
the few components other tabs wire to; this module only lays out the tabs,
connects them (a finished Playground run opens in the Traces stepper; the
Runs poll timer runs only while its tab is open) and applies the deployment
policy (queue limits, upload size, optional password, public-demo mode).
"""

import logging
import os

import gradio as gr

from workbench.store import Store
from workbench.ui import render, tab_playground, tab_runs, tab_traces
from workbench.ui.context import UIContext
from workbench.ui.deployment import DeploymentPolicy
from workbench.ui.demo_runs import seed_demo_runs

TITLE = "Visual-ARFT Workbench"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _intro(policy: DeploymentPolicy) -> str:
    text = (f"## {TITLE}\nVision-language agents that think in turns and call tools (search, Python image code). "
            "Run a question in the **Playground**, step through what happened in **Traces**, compare "
            "training curves in **Runs**.")
    if policy.public_demo:
        text += ("\n\n*Public demo:* only the embedded tiny model (random weights, so expect parse errors) runs "
                 "here; you see your own runs and the shipped examples. Run the workbench yourself for more.")
    return text


def create_app(public_demo: bool | None = None, store: Store | None = None) -> tuple[gr.Blocks, UIContext]:
    """The Blocks app and its context (tests use the context's store and policy)."""
    policy = DeploymentPolicy.from_env(public_demo)
    ctx = UIContext(store=store or Store(), policy=policy)
    if policy.public_demo or not ctx.store.list_runs(limit=1):
        seed_demo_runs(ctx.store)  # a fresh workbench (or a public visitor) gets examples to explore
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(_intro(policy), elem_id="wb-intro")
        with gr.Tabs() as tabs:
            with gr.Tab("Playground", id="playground") as playground_tab:
                playground = tab_playground.build(ctx)
            with gr.Tab("Traces", id="traces") as traces_tab:
                traces = tab_traces.build(ctx)
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs = tab_runs.build(ctx)

        def open_finished(trace_id, request: gr.Request):
            if not trace_id:
                return tuple(gr.skip() for _ in range(len(traces.open_outputs) + 1))
            return (*traces.open_fn(trace_id, request), gr.Tabs(selected="traces"))

        opened = playground.run_event.success(open_finished, playground.trace_id, [*traces.open_outputs, tabs],
                                              api_visibility="private")
        opened.then(traces.refresh_fn, traces.refresh_inputs, traces.refresh_outputs, api_visibility="private")
        traces_tab.select(traces.refresh_fn, traces.refresh_inputs, traces.refresh_outputs,
                          api_visibility="private")
        runs_tab.select(runs.refresh_fn, runs.refresh_inputs, runs.refresh_outputs, api_visibility="private")
        runs_tab.select(lambda: gr.Timer(active=True), None, runs.timer, api_visibility="private")
        for other in (playground_tab, traces_tab):
            other.select(lambda: gr.Timer(active=False), None, runs.timer, api_visibility="private")
        app.load(traces.refresh_fn, traces.refresh_inputs, traces.refresh_outputs, api_visibility="private")
    app.queue(default_concurrency_limit=policy.concurrency_limit, max_size=policy.queue_size)
    return app, ctx


def build_app(public_demo: bool | None = None) -> gr.Blocks:
    """The app; `public_demo=None` reads WORKBENCH_PUBLIC_DEMO."""
    return create_app(public_demo)[0]


def launch_options(policy: DeploymentPolicy) -> dict:
    """Keyword arguments for `Blocks.launch` that carry the policy (auth, upload limit) and the styling."""
    return {
        "auth": policy.auth,
        "auth_message": "This workbench is password protected." if policy.auth else None,
        "max_file_size": f"{policy.max_upload_mb}mb",
        "show_error": not policy.public_demo,
        "css": render.CSS,
        "theme": gr.themes.Soft(),
        "footer_links": ["api"] if not policy.public_demo else [],
    }


def main() -> None:
    """Start the app on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    app, ctx = create_app()
    host = os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    port = int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=True, **launch_options(ctx.policy))
    ctx.warmup.start()  # build/load the tiny model once the UI is up, so start-up does not wait for it
    app.block_thread()
