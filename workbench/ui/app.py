"""The web app: builds the Gradio Blocks from one module per tab and launches it.

Tabs are modules `workbench/ui/tab_*.py`, each with `build(ctx)` returning
the few components other tabs wire to; this module only lays out the tabs,
connects them (a finished Playground run opens in the Traces stepper; each
poll timer -- Runs, Train, Eval -- runs only while its tab is open) and
applies the deployment policy (queue limits, upload size, optional password,
public-demo mode). Train, Eval and Search cache start server-side jobs or
show everyone's searches, so they are not built at all when the policy hides
training (no hidden endpoints). At start-up the database is checked (a
damaged file stops the app with one line naming it and the fix), runs and
jobs whose process died are settled and a backup is made when due
(`workbench.upkeep`), which `main` then repeats every few seconds. With an ingestion token set
(not in a public demo) `main` adds the route training scripts elsewhere send runs to
(workbench/ui/ingest_route.py).
"""

import logging
import os
import sys
from dataclasses import dataclass

import gradio as gr

from workbench import upkeep
from workbench.database_file import DatabaseDamaged
from workbench.ingest import INGEST_PATH
from workbench.store import Store
from workbench.ui import render, tab_eval, tab_playground, tab_runs, tab_search, tab_traces, tab_train
from workbench.ui.context import UIContext
from workbench.ui.demo_runs import seed_demo_runs
from workbench.ui.deployment import VISITOR_TOKEN_JS, DeploymentPolicy, browser_secret
from workbench.ui.ingest_route import ingest_routes

TITLE = "Visual-ARFT Workbench"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _intro(policy: DeploymentPolicy) -> str:
    text = (f"## {TITLE}\nVision-language agents that think in turns and call tools (search, Python image code). "
            "Run a question in the **Playground**, step through what happened in **Traces**, compare "
            "training curves in **Runs**.")
    if policy.show_training:
        text += (" Launch training in **Train**, benchmarks in **Eval**, and see what searching cost in "
                 "**Search cache**.")
    if policy.public_demo:
        text += ("\n\n*Public demo:* only the shipped demo model (a tiny model trained on the demo world; "
                 "see its model card) runs here; you see your own runs and the shipped examples. Run the workbench "
                 "yourself for more.")
    return text


def create_app(public_demo: bool | None = None, store: Store | None = None) -> tuple[gr.Blocks, UIContext]:
    """The Blocks app and its context (tests use the context's store and policy)."""
    policy = DeploymentPolicy.from_env(public_demo)
    ctx = UIContext(store=store or Store(), policy=policy)
    upkeep.at_start(ctx.store)  # DatabaseDamaged stops the app here, before anything reads a row
    if policy.public_demo or not ctx.store.list_runs(limit=1):
        seed_demo_runs(ctx.store)  # a fresh workbench (or a public visitor) gets examples to explore
    with gr.Blocks(title=TITLE) as app:
        if policy.public_demo:  # each browser keeps its own visitor token (encrypted in localStorage)
            ctx.visitor = gr.BrowserState(None, storage_key="workbench-visitor", secret=browser_secret())
            app.load(None, ctx.visitor, ctx.visitor, js=VISITOR_TOKEN_JS, api_visibility="private")
        gr.Markdown(_intro(policy), elem_id="wb-intro")
        with gr.Tabs() as tabs:
            with gr.Tab("Playground", id="playground") as playground_tab:
                playground = tab_playground.build(ctx)
            with gr.Tab("Traces", id="traces") as traces_tab:
                traces = tab_traces.build(ctx)
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs = tab_runs.build(ctx)
            job_tabs = _build_job_tabs(ctx) if policy.show_training else None

        def open_finished(request: gr.Request, trace_id, visitor=None):
            if not trace_id:
                return tuple(gr.skip() for _ in range(len(traces.open_outputs) + 1))
            return (*traces.open_fn(request, trace_id, visitor), gr.Tabs(selected="traces"))

        opened = playground.run_event.success(open_finished, [playground.trace_id, *ctx.visitor_inputs()],
                                              [*traces.open_outputs, tabs], api_visibility="private")
        opened.then(traces.refresh_fn, traces.refresh_inputs, traces.refresh_outputs, api_visibility="private")
        traces_tab.select(traces.refresh_fn, traces.refresh_inputs, traces.refresh_outputs,
                          api_visibility="private")
        runs_tab.select(runs.refresh_fn, runs.refresh_inputs, runs.refresh_outputs, api_visibility="private")
        timers = {runs_tab: runs.timer}
        if job_tabs is not None:
            timers.update(job_tabs.wire())
        _one_timer_per_tab([playground_tab, traces_tab, runs_tab, *(job_tabs.tabs if job_tabs else [])], timers)
        app.load(traces.refresh_fn, traces.refresh_inputs, traces.refresh_outputs, api_visibility="private")
        app.load(playground.isolation_fn, None, playground.isolation, api_visibility="private")
    app.queue(default_concurrency_limit=policy.concurrency_limit, max_size=policy.queue_size)
    return app, ctx


@dataclass
class JobTabs:
    """The Train, Eval and Search cache tabs (built only when the policy shows training)."""

    train_tab: gr.Tab
    train: tab_train.TrainTab
    eval_tab: gr.Tab
    evaluation: tab_eval.EvalTab
    search_tab: gr.Tab
    search: tab_search.SearchTab

    @property
    def tabs(self) -> list:
        return [self.train_tab, self.eval_tab, self.search_tab]

    def wire(self) -> dict:
        """Refresh each tab when it is opened; returns {tab: its poll timer}."""
        for tab, part in ((self.train_tab, self.train), (self.eval_tab, self.evaluation),
                          (self.search_tab, self.search)):
            tab.select(part.refresh_fn, part.refresh_inputs, part.refresh_outputs, api_visibility="private")
        return {self.train_tab: self.train.timer, self.eval_tab: self.evaluation.timer}


def _build_job_tabs(ctx: UIContext) -> JobTabs:
    with gr.Tab("Train", id="train") as train_tab:
        train = tab_train.build(ctx)
    with gr.Tab("Eval", id="eval") as eval_tab:
        evaluation = tab_eval.build(ctx)
    with gr.Tab("Search cache", id="search") as search_tab:
        search = tab_search.build(ctx)
    return JobTabs(train_tab, train, eval_tab, evaluation, search_tab, search)


def _one_timer_per_tab(tabs: list, timers: dict) -> None:
    """Opening a tab turns its own poll timer on and every other tab's off."""
    ordered = list(timers.values())
    for tab in tabs:
        own = timers.get(tab)
        tab.select(lambda own=own: {timer: gr.Timer(active=timer is own) for timer in ordered}, None, ordered,
                   api_visibility="private")


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


def extra_routes(policy: DeploymentPolicy, store: Store) -> list:
    """Routes beside Gradio's: run ingestion when the operator set a token (the policy never has one in a public
    demo), registered before the server starts."""
    if not policy.ingest_token:
        return []
    logging.getLogger(__name__).info("run ingestion is on at %s", INGEST_PATH)
    return ingest_routes(store, policy.ingest_token)


def main() -> None:
    """Start the app on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860).

    A damaged database ends it at once: one line on stderr naming the file and the fix, exit code 2.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    try:
        app, ctx = create_app()
    except DatabaseDamaged as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    upkeep.start(ctx.store)
    host = os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    port = int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=True,
               app_kwargs={"routes": extra_routes(ctx.policy, ctx.store)}, **launch_options(ctx.policy))
    ctx.warmup.start()  # load the demo model once the UI is up, so start-up does not wait for it
    app.block_thread()
