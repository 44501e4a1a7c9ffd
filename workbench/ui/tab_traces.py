"""Traces tab: filter traces, step through one turn by turn, view its GRPO group, compare two traces.

Plain callbacks (`list_traces`, `load_trace`, `turn_view`, `step_turn`,
`group_view`, `compare_candidates`, `compare_view`) take a `Viewer`, so a
public-demo visitor only ever reaches traces of runs they may see; `build`
lays out the tab and wraps them for Gradio.
"""

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from workbench.protocol import extract_code
from workbench.store import Store
from workbench.trace import Trace, Turn
from workbench.ui import render
from workbench.ui.context import UIContext
from workbench.ui.deployment import Viewer
from workbench.ui.images_view import turn_images

ALL = "all"
OUTCOMES = [ALL, "answered", "tool_error", "max_turns", "parse_error", "error"]
# Result files imported for scoring hold one turnless trace per item; they would bury the episodes.
SHOWING = {"episodes": True, "scored results (imported files)": False, ALL: None}
TABLE_HEADERS = ["outcome", "reward", "adv", "turns", "answer", "item", "sample", "run", "question", "trace id"]
COLUMN_WIDTHS = ["95px", "70px", "70px", "60px", "140px", "100px", "70px", "110px", "260px", "290px"]
LIST_LIMIT = 200


class TraceNotFound(LookupError):
    """No trace with that id that this viewer may see."""


@dataclass
class TraceFilters:
    """What the trace list shows; None / "all" means no filter."""

    run_id: str | None = None
    item_id: str | None = None
    outcome: str | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    with_turns: bool | None = True
    limit: int = LIST_LIMIT

    @classmethod
    def from_inputs(cls, run_id, item_id, outcome, min_reward, max_reward, showing=None) -> "TraceFilters":
        def number(value):
            text = "" if value is None else str(value).strip()
            return float(text) if text else None

        return cls(run_id=None if run_id in (None, "", ALL) else run_id,
                   item_id=(item_id or "").strip() or None,
                   outcome=None if outcome in (None, "", ALL) else outcome,
                   min_reward=number(min_reward), max_reward=number(max_reward),
                   with_turns=SHOWING.get(showing or "episodes", True) if run_id in (None, "", ALL) else None)


def run_choices(store: Store, viewer: Viewer) -> list[tuple[str, str]]:
    """Dropdown choices (label, run id) of the runs this viewer may see, newest first."""
    runs = viewer.visible_runs(store)
    return [("all runs", ALL)] + [(f"{run['name']} · {run['kind']} · {run['id']}", run["id"]) for run in runs]


def list_traces(store: Store, viewer: Viewer, filters: TraceFilters) -> list[dict]:
    """Trace summaries matching the filters, newest first, restricted to visible runs."""
    query = dict(item_id=filters.item_id, stop_reason=filters.outcome, min_reward=filters.min_reward,
                 max_reward=filters.max_reward, with_turns=filters.with_turns, limit=filters.limit)
    if filters.run_id is not None:
        if not viewer.can_see_run(store.get_run(filters.run_id)):
            return []
        return store.list_traces(run_id=filters.run_id, **query)
    if not viewer.public_demo:
        return store.list_traces(**query)
    rows = []  # a visitor sees few runs: ask per run rather than filter everyone's traces
    for run in viewer.visible_runs(store):
        rows += store.list_traces(run_id=run["id"], **query)
    rows.sort(key=lambda r: (-(r["created_at"] or 0), r["sample_index"] or 0))
    return rows[:filters.limit]


def trace_table(rows: list[dict]) -> list[list[Any]]:
    """Rows for the trace list table (TABLE_HEADERS order)."""
    def rounded(value):
        return None if value is None else round(value, 3)

    return [[row["stop_reason"] or "running", rounded(row["reward_total"]), rounded(row["advantage"]),
             row["num_turns"], render.clip(row["final_answer"] or "", 60), row["item_id"] or "",
             row["sample_index"], row["run_id"] or "", render.clip(row["question"] or "", 80), row["id"]]
            for row in rows]


def load_trace(store: Store, viewer: Viewer, trace_id: str | None) -> Trace:
    trace_id = (trace_id or "").strip()
    trace = store.get_trace(trace_id) if trace_id else None
    if trace is None or not viewer.can_see_run(store.get_run(trace.run_id) if trace.run_id else None):
        raise TraceNotFound(f"no trace {trace_id[:12]!r} here; pick one from the list")
    return trace


def turn_out_of_range(number: float | None, count: int) -> str | None:
    """Why a typed turn number cannot be shown as it is, or None when it can.

    >>> turn_out_of_range(0, 3)
    'There is no turn 0: this trace has turns 1 to 3.'
    >>> turn_out_of_range(2, 3) is None
    True
    """
    if number is None or not count or 1 <= number <= count:
        return None
    return f"There is no turn {int(number)}: this trace has turns 1 to {count}."


def step_turn(index: int, delta: int, count: int) -> int:
    """The turn index after moving `delta` turns, kept inside 0..count-1.

    >>> step_turn(0, -1, 3), step_turn(1, 1, 3), step_turn(2, 1, 3)
    (0, 2, 2)
    """
    return max(0, min(count - 1, index + delta)) if count else 0


@dataclass
class TurnView:
    """Everything the stepper shows for one turn of a trace."""

    trace_id: str
    index: int
    count: int
    header: str
    turn: str
    code: str | None = None
    stdout: str = ""
    stderr: str = ""
    images: list = field(default_factory=list)

    @property
    def position(self) -> str:
        return f"turn {self.index + 1} of {self.count}" if self.count else "no turns"


def turn_view(trace: Trace, index: int) -> TurnView:
    """The stepper's content for turn `index` (clamped) of `trace`."""
    count = len(trace.turns)
    index = step_turn(index, 0, count)
    header = render.trace_header_html(trace)
    if not count:
        return TurnView(trace.id, 0, 0, header, '<p class="wb-muted">This trace has no turns.</p>',
                        images=turn_images(trace, Turn(index=0, raw="")))
    turn = trace.turns[index]
    code = stdout = stderr = None
    if turn.action == "code":
        code = extract_code(turn.argument or "")
        call = turn.tool_call
        stdout, stderr = (call.stdout, call.stderr) if call else ("", "")
    return TurnView(trace.id, index, count, header, render.turn_html(turn, count), code, stdout or "",
                    stderr or "", turn_images(trace, turn))


def group_view(store: Store, viewer: Viewer, trace: Trace) -> str:
    """HTML of every sample sharing the trace's group_id (the GRPO group), side by side."""
    if not trace.group_id:
        return render.group_html([])
    rows = store.list_traces(group_id=trace.group_id, limit=256)
    traces = [t for t in (store.get_trace(r["id"]) for r in rows) if t is not None]
    visible = [t for t in traces if viewer.can_see_run(store.get_run(t.run_id) if t.run_id else None)]
    return render.group_html(visible)


def compare_candidates(store: Store, viewer: Viewer, trace: Trace) -> list[tuple[str, str]]:
    """Traces worth comparing with `trace`: same item (any run), else same run / group."""
    if trace.item_id:
        rows = store.list_traces(item_id=trace.item_id, limit=100)
    else:
        rows = store.list_traces(run_id=trace.run_id, limit=100) if trace.run_id else []
    choices = []
    for row in rows:
        if row["id"] == trace.id or not viewer.can_see_run(store.get_run(row["run_id"]) if row["run_id"] else None):
            continue
        label = (f"{row['stop_reason']} · reward {render.fmt_number(row['reward_total'], 2)} · run {row['run_id']}"
                 f" · sample {row['sample_index']} · {row['id'][:8]}")
        choices.append((label, row["id"]))
    return choices


def compare_view(store: Store, viewer: Viewer, trace_a: str, trace_b: str) -> str:
    return render.compare_html(load_trace(store, viewer, trace_a), load_trace(store, viewer, trace_b))


@dataclass
class TracesTab:
    """What the app wires to: open a trace by id into the stepper, refresh the list."""

    open_fn: Any
    open_inputs: list
    open_outputs: list
    refresh_fn: Any
    refresh_inputs: list
    refresh_outputs: list


def build(ctx: UIContext) -> TracesTab:
    store = ctx.store
    with gr.Row():
        run_filter = gr.Dropdown([("all runs", ALL)], value=ALL, label="Run", scale=3, elem_id="tr-run")
        item_filter = gr.Textbox(label="Item id", scale=1)
        outcome_filter = gr.Dropdown(OUTCOMES, value=ALL, label="Outcome", scale=1)
        min_reward = gr.Textbox(label="Min reward", placeholder="any", scale=1)
        max_reward = gr.Textbox(label="Max reward", placeholder="any", scale=1)
        showing = gr.Dropdown(list(SHOWING), value="episodes", label="Show", scale=1, elem_id="tr-showing",
                              info="With every run: episodes, or the scored answers of imported result files")
        refresh = gr.Button("Refresh", scale=1, elem_id="tr-refresh")
    table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, max_height=280,
                         column_widths=COLUMN_WIDTHS, label="Traces (click a row to open it)", elem_id="tr-table")
    with gr.Row(equal_height=True):
        trace_id = gr.Textbox(label="Trace id", scale=4, elem_id="tr-trace-id")
        open_button = gr.Button("Open", scale=1)
        prev_button = gr.Button("◀ Previous turn", scale=1, elem_id="tr-prev")
        # no `minimum`: Gradio would reject 0 with a server traceback; the callback explains it instead
        turn_number = gr.Number(label="Turn", value=1, precision=0, scale=1, elem_id="tr-turn")
        next_button = gr.Button("Next turn ▶", scale=1, elem_id="tr-next")
    position = gr.Markdown("Open a trace from the list.", elem_id="tr-position")
    header = gr.HTML(elem_id="tr-header")
    with gr.Row():
        with gr.Column(scale=3):
            turn_box = gr.HTML(elem_id="tr-turn-html")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Images: input (crop box) · before · after", columns=2, height=320,
                                 interactive=False, object_fit="contain", preview=False, fit_columns=False,
                                 elem_id="tr-gallery")
    with gr.Row(visible=False) as code_row:
        code = gr.Code(language="python", label="Code the model wrote", interactive=False, scale=3,
                       elem_id="tr-code")
        with gr.Column(scale=2):
            stdout = gr.Textbox(label="stdout", lines=4, max_lines=12, interactive=False)
            stderr = gr.Textbox(label="stderr", lines=4, max_lines=12, interactive=False)
    with gr.Accordion("GRPO group: all samples of this prompt", open=False):
        group_button = gr.Button("Show group", elem_id="tr-group-button")
        group_box = gr.HTML(elem_id="tr-group")
    with gr.Accordion("Compare with another trace", open=False):
        with gr.Row():
            other = gr.Dropdown([], label="Other trace (same item, or same run)", allow_custom_value=True, scale=4)
            compare_button = gr.Button("Compare turn by turn", scale=1)
        compare_box = gr.HTML(elem_id="tr-compare")

    view_outputs = [trace_id, turn_number, position, header, turn_box, gallery, code_row, code, stdout, stderr]

    def show(view: TurnView) -> tuple:
        return (view.trace_id, view.index + 1, f"**{view.position}**", view.header, view.turn, view.images,
                gr.Row(visible=view.code is not None), view.code or "", view.stdout, view.stderr)

    # Callbacks take the request first and the visitor token last: the token is an input only in a public demo.
    def open_view(request: gr.Request, trace_id_value, number, visitor=None):
        viewer = ctx.viewer(request, visitor)
        try:
            trace = load_trace(store, viewer, trace_id_value)
        except TraceNotFound as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        index = int(number or 1) - 1
        candidates = compare_candidates(store, viewer, trace)
        return (*show(turn_view(trace, index)), gr.Dropdown(choices=candidates, value=None), "", "")

    open_outputs = view_outputs + [other, group_box, compare_box]

    def on_open(request: gr.Request, trace_id_value, visitor=None):
        return open_view(request, trace_id_value, 1, visitor)

    def on_step(delta):
        def step(request: gr.Request, trace_id_value, number, visitor=None):
            trace = _load_or_error(request, trace_id_value, visitor)
            if delta == 0 and (problem := turn_out_of_range(number, len(trace.turns))):
                gr.Warning(problem)
            index = step_turn(int(number or 1) - 1, delta, len(trace.turns))
            return show(turn_view(trace, index))
        return step

    def _load_or_error(request, trace_id_value, visitor):
        try:
            return load_trace(store, ctx.viewer(request, visitor), trace_id_value)
        except TraceNotFound as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def on_list(request: gr.Request, run_id, item_id, outcome, low, high, show, visitor=None):
        viewer = ctx.viewer(request, visitor)
        try:
            filters = TraceFilters.from_inputs(run_id, item_id, outcome, low, high, show)
        except ValueError as exc:
            raise gr.Error(f"reward filter: {exc}", print_exception=False) from None
        choices = run_choices(store, viewer)
        value = run_id if run_id in {value for _, value in choices} else ALL
        return gr.Dropdown(choices=choices, value=value), trace_table(list_traces(store, viewer, filters))

    def on_select(request: gr.Request, event: gr.SelectData, visitor=None):
        row = event.row_value or []
        if not row:
            return tuple(gr.skip() for _ in open_outputs)
        return open_view(request, row[-1], 1, visitor)

    def on_group(request: gr.Request, trace_id_value, visitor=None):
        trace = _load_or_error(request, trace_id_value, visitor)
        return group_view(store, ctx.viewer(request, visitor), trace)

    def on_compare(request: gr.Request, trace_id_value, other_id, visitor=None):
        if not other_id:
            raise gr.Error("pick the other trace first", print_exception=False)
        try:
            return compare_view(store, ctx.viewer(request, visitor), trace_id_value, other_id)
        except TraceNotFound as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    who = ctx.visitor_inputs()
    filters = [run_filter, item_filter, outcome_filter, min_reward, max_reward, showing, *who]
    refresh.click(on_list, filters, [run_filter, table], api_name="list_traces")
    for control in (run_filter, outcome_filter, showing):
        control.input(on_list, filters, [run_filter, table], api_visibility="private")
    for control in (item_filter, min_reward, max_reward):
        control.submit(on_list, filters, [run_filter, table], api_visibility="private")
    table.select(on_select, who, open_outputs, api_visibility="private")
    open_button.click(on_open, [trace_id, *who], open_outputs, api_name="open_trace")
    trace_id.submit(on_open, [trace_id, *who], open_outputs, api_visibility="private")
    prev_button.click(on_step(-1), [trace_id, turn_number, *who], view_outputs, api_name="previous_turn")
    next_button.click(on_step(+1), [trace_id, turn_number, *who], view_outputs, api_name="next_turn")
    turn_number.submit(on_step(0), [trace_id, turn_number, *who], view_outputs, api_visibility="private")
    group_button.click(on_group, [trace_id, *who], group_box, api_name="group_view")
    compare_button.click(on_compare, [trace_id, other, *who], compare_box, api_name="compare_traces")
    return TracesTab(open_fn=on_open, open_inputs=[trace_id, *who], open_outputs=open_outputs,
                     refresh_fn=on_list, refresh_inputs=filters, refresh_outputs=[run_filter, table])
