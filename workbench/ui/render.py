"""Traces as HTML: turn cards, trace headers, reward tables, search results, group and compare views.

Plain Python (no Gradio): every function takes `Trace`/`Turn` objects and
returns an HTML string for a `gr.HTML` component. Model output and tool
output are untrusted text, so every value is HTML-escaped here; nothing a
model writes can inject markup or script into the page.
"""

import base64
import html
import io
import keyword
import re
import tokenize
from collections.abc import Iterable

from workbench.images import thumbnail
from workbench.protocol import extract_code
from workbench.trace import ToolCall, Trace, Turn

OUTCOME_LABELS = {
    "answered": ("answered", "#15803d"),
    "tool_error": ("tool error", "#b91c1c"),
    "max_turns": ("max turns", "#b45309"),
    "parse_error": ("parse error", "#7c3aed"),
    "error": ("error", "#b91c1c"),
    "length": ("length", "#b45309"),
    None: ("running", "#2563eb"),
}
_INFORMATION = re.compile(r"<information>(.*?)</information>", re.S)
_NUMBERED = re.compile(r"(?<!\d)\d+\.\s*Content:\s*")  # the released runner writes "1. Content:a2. Content:b"
CLIP = 600


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def without_upload_paths(message: str, *paths: str | None) -> str:
    """The message with each uploaded file's server path (a Gradio temp file) shown as its file name.

    >>> without_upload_paths("/tmp/gradio/ab12/results.json: item 0 has no gt", "/tmp/gradio/ab12/results.json")
    'results.json: item 0 has no gt'
    """
    for path in paths:
        if path:
            message = message.replace(str(path), str(path).replace("\\", "/").rsplit("/", 1)[-1])
    return message


def clip(text: str | None, limit: int = CLIP) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + " …"


def outcome_badge(stop_reason: str | None) -> str:
    label, colour = OUTCOME_LABELS.get(stop_reason, (stop_reason or "?", "#475569"))
    return f'<span class="wb-badge" style="background:{colour}">{esc(label)}</span>'


def fmt_number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def rewards_table(rewards: dict[str, float], advantage: float | None = None) -> str:
    """Per-component rewards (total last) and the GRPO advantage, as a small table."""
    if not rewards and advantage is None:
        return '<p class="wb-muted">No rewards recorded for this trace.</p>'
    items = sorted((k, v) for k, v in rewards.items() if k != "total")
    if "total" in rewards:
        items.append(("total", rewards["total"]))
    if advantage is not None:
        items.append(("advantage", advantage))
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{fmt_number(v)}</td></tr>" for k, v in items)
    return f'<table class="wb-rewards">{cells}</table>'


def trace_header_html(trace: Trace) -> str:
    """Question, outcome, answer vs gold, model and rewards of a whole trace."""
    gold = ", ".join(trace.gold) if trace.gold else "—"
    meta = [f"trace <code>{esc(trace.id[:12])}</code>", f"run <code>{esc(trace.run_id)}</code>",
            f"model {esc(trace.model_id)}" + (f" + {esc(trace.adapter)}" if trace.adapter else ""),
            f"{esc(trace.protocol)}/{esc(trace.layout)}", f"{len(trace.turns)} turns",
            f"{trace.duration_s:.1f}s"]
    if trace.item_id:
        meta.insert(2, f"item {esc(trace.item_id)}")
    if trace.group_id:
        meta.append(f"sample {trace.sample_index} of group <code>{esc(trace.group_id)}</code>")
    return (
        f'<div class="wb-header">{outcome_badge(trace.stop_reason)} '
        f'<span class="wb-question">{esc(trace.question)}</span>'
        f'<div class="wb-meta">{" · ".join(meta)}</div>'
        f'<div class="wb-answer"><b>Answer:</b> {esc(trace.final_answer) or "<i>none</i>"}'
        f' &nbsp; <b>Gold:</b> {esc(gold)}</div>'
        f'{rewards_table(trace.rewards, trace.advantage)}</div>'
    )


def search_results(call: ToolCall) -> list[dict[str, str]]:
    """Search hits of a search call: structured details if present, else parsed <information> text."""
    details = call.details if isinstance(call.details, dict) else {}
    hits = details.get("hits") or details.get("results")  # tools/search.py records `hits`
    if isinstance(hits, list) and hits:
        out = []
        for hit in hits:
            if isinstance(hit, dict):
                out.append({"title": str(hit.get("title") or ""), "url": str(hit.get("url") or hit.get("link") or ""),
                            "snippet": str(hit.get("snippet") or hit.get("content") or hit.get("text") or "")})
            else:
                out.append({"title": "", "url": "", "snippet": str(hit)})
        return out
    match = _INFORMATION.search(call.output_text or "")
    body = (match.group(1) if match else call.output_text or "").strip()
    if not body:
        return []
    snippets = [part.strip() for part in _NUMBERED.split(body) if part.strip()]
    return [{"title": "", "url": "", "snippet": s} for s in (snippets or [body])]


def search_results_html(call: ToolCall) -> str:
    hits = search_results(call)
    if not hits:
        return '<p class="wb-muted">The search returned nothing.</p>'
    items = []
    for hit in hits:
        title = esc(hit["title"]) or "result"
        url = hit["url"]
        link = (f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer">{title}</a>'
                if url.startswith(("http://", "https://")) else f"<b>{title}</b>")
        items.append(f"<li>{link}<div>{esc(clip(hit['snippet'], 400))}</div></li>")
    return f'<ol class="wb-search">{"".join(items)}</ol>'


def tool_status(call: ToolCall) -> str:
    state = "ok" if call.ok else f"failed: {esc(call.error)}"
    return f'<span class="wb-tool {"ok" if call.ok else "bad"}">{esc(call.name)} {state} · {call.latency_s:.2f}s</span>'


def python_html(code: str) -> str:
    """Python source as escaped HTML with keywords, strings, comments and numbers marked for colour.

    >>> python_html("x = 1  # one")
    '<pre class="wb-code">x = <span class="n">1</span>  <span class="c"># one</span></pre>'
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return f'<pre class="wb-code">{esc(code)}</pre>'  # code that does not tokenize is shown as written
    lines, out, row, col = code.splitlines(keepends=True), [], 1, 0
    for token in tokens:
        (start_row, start_col), (end_row, end_col) = token.start, token.end
        out.append(esc(_span_text(lines, row, col, start_row, start_col)))
        text = esc(token.string)
        kind = {tokenize.STRING: "s", tokenize.COMMENT: "c", tokenize.NUMBER: "n"}.get(token.type)
        if token.type == tokenize.NAME and keyword.iskeyword(token.string):
            kind = "k"
        out.append(f'<span class="{kind}">{text}</span>' if kind and text else text)
        row, col = end_row, end_col
    return f'<pre class="wb-code">{"".join(out).rstrip()}</pre>'


def _span_text(lines: list[str], row: int, col: int, end_row: int, end_col: int) -> str:
    """The source text between two tokenizer positions (the white space tokens skip)."""
    if (row, col) >= (end_row, end_col) or row > len(lines):
        return ""
    if row == end_row:
        return lines[row - 1][col:end_col]
    return lines[row - 1][col:] + "".join(lines[row:end_row - 1]) + (lines[end_row - 1][:end_col]
                                                                         if end_row <= len(lines) else "")


def image_html(sha: str | None, caption: str) -> str:
    """A stored image's thumbnail inline (a data URL: nothing else to serve), with a caption."""
    if not sha:
        return ""
    path = thumbnail(sha)
    if path is None:
        return f'<span class="wb-muted">({esc(caption)}: image {esc(sha[:12])} is not in this store)</span>'
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure class="wb-figure"><img alt="{esc(caption)}" src="data:image/jpeg;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def tool_result_html(turn: Turn) -> str:
    """What a tool did, in place: the code and what it printed with the image before and after, or the hits."""
    call = turn.tool_call
    if call is None:
        return ""
    parts = [f"<div><b>Tool</b> {tool_status(call)}</div>"]
    if call.name == "code":
        parts.append(python_html(extract_code(call.argument or "")))
        for label, text in (("stdout", call.stdout), ("stderr", call.stderr)):
            if (text or "").strip():
                parts.append(f'<div class="wb-stream"><b>{label}</b><pre>{esc(clip(text, 2000))}</pre></div>')
        after = call.output_images[-1] if call.output_images else None
        figures = image_html(turn.image, "before") + image_html(after, "after")
        if figures:
            parts.append(f'<div class="wb-figures">{figures}</div>')
    elif call.name == "search":
        parts.append(search_results_html(call))
    return "".join(parts)


def turn_html(turn: Turn, total: int, *, inline_tool: bool = False) -> str:
    """One turn: thought, action and argument, parse error, tool status, feedback to the model.

    `inline_tool` also shows the tool's work in place (code, stdout/stderr, images), as the Playground
    streams it; the Traces stepper shows those in components of their own.
    """
    cost = f" · {turn.completion_tokens} tokens · {turn.latency_s:.2f}s" if turn.completion_tokens else ""
    parts = [f'<div class="wb-turn"><div class="wb-turn-title">Turn {turn.index + 1} of {total}{cost}</div>']
    parts.append(f'<div class="wb-think"><b>Thought</b><p>{esc(turn.think) or "<i>no &lt;think&gt;</i>"}</p></div>')
    if turn.action:
        argument = "" if turn.action == "code" else f"<pre>{esc(clip(turn.argument, 2000))}</pre>"
        parts.append(f'<div class="wb-action"><b>Action</b> <code>&lt;{esc(turn.action)}&gt;</code>{argument}</div>')
    if turn.parse_error:
        parts.append(f'<div class="wb-error"><b>Parse error:</b> {esc(turn.parse_error)}</div>')
    call = turn.tool_call
    if call and inline_tool:
        parts.append(tool_result_html(turn))
    elif call:
        parts.append(f"<div><b>Tool</b> {tool_status(call)}</div>")
        if call.name == "search":
            parts.append(search_results_html(call))
    if turn.feedback and not (call and call.name == "search"):
        parts.append('<div class="wb-feedback"><b>Fed back to the model</b>'
                     f'<pre>{esc(clip(turn.feedback, 1500))}</pre></div>')
    raw = (f"<pre>{esc(clip(turn.raw, 4000))}</pre>" if (turn.raw or "").strip()
           else '<p class="wb-muted">The model wrote nothing readable (empty output).</p>')
    parts.append(f'<details class="wb-raw" {"open" if turn.parse_error else ""}>'
                 f"<summary>Raw model output</summary>{raw}</details></div>")
    return "".join(parts)


def turn_summary(turn: Turn) -> str:
    """A one-line description of a turn for compact views."""
    if turn.parse_error:
        return f"parse error: {clip(turn.parse_error, 120)}"
    text = f"<{turn.action}> {clip((turn.argument or '').strip(), 160)}"
    if turn.tool_call and not turn.tool_call.ok:
        text += f"  [tool failed: {clip(turn.tool_call.error, 80)}]"
    return text


def verdict_html(trace: Trace) -> str:
    """Right / partly right / wrong against the gold answers, with F1/EM and each reward component."""
    if not trace.gold or "f1" not in trace.rewards:
        return ""
    f1, em = trace.rewards["f1"], trace.rewards.get("em", 0.0)
    word, colour = ("right", "#15803d") if em >= 1.0 else ("partly right", "#b45309") if f1 > 0 else ("wrong",
                                                                                                      "#b91c1c")
    parts = {k: v for k, v in trace.rewards.items() if k not in ("f1", "em")}
    return (f'<div class="wb-verdict"><span class="wb-badge" style="background:{colour}">{word}</span> '
            f'F1 {f1:.2f} · EM {em:.2f} · gold: {esc(", ".join(trace.gold))}'
            f'{rewards_table(parts) if parts else ""}</div>')


def transcript_html(traces: Iterable[Trace]) -> str:
    """Live view of every sample's turns so far, each tool's work in place (the Playground stream)."""
    blocks = []
    for trace in traces:
        turns = "".join(turn_html(turn, len(trace.turns), inline_tool=True) for turn in trace.turns)
        answer = f" · answer: <b>{esc(trace.final_answer)}</b>" if trace.final_answer is not None else ""
        blocks.append(f'<div class="wb-sample"><div class="wb-sample-title">Sample {trace.sample_index} '
                      f'{outcome_badge(trace.stop_reason)}{answer}</div>{verdict_html(trace)}{turns}</div>')
    return "".join(blocks) or '<p class="wb-muted">No turns yet.</p>'


def group_html(traces: list[Trace]) -> str:
    """All G samples of one prompt side by side: outcome, answer, rewards, advantage, turns."""
    if not traces:
        return '<p class="wb-muted">This trace has no GRPO group.</p>'
    cards = []
    for trace in sorted(traces, key=lambda t: t.sample_index):
        turns = "".join(f"<li>{_compact_turn(t)}</li>" for t in trace.turns)
        cards.append(
            f'<div class="wb-card"><div class="wb-card-title">sample {trace.sample_index} '
            f'{outcome_badge(trace.stop_reason)}</div>'
            f'<div><b>answer:</b> {esc(trace.final_answer) or "<i>none</i>"}</div>'
            f'{rewards_table(trace.rewards, trace.advantage)}<ol class="wb-turnlist">{turns}</ol>'
            f'<div class="wb-muted">trace {esc(trace.id[:12])}</div></div>')
    first = traces[0]
    return (f'<div class="wb-muted">group <code>{esc(first.group_id)}</code> · {len(traces)} samples · '
            f'{esc(clip(first.question, 200))}</div><div class="wb-group">{"".join(cards)}</div>')


def _compact_turn(turn: Turn) -> str:
    """A turn in a narrow column: its action (code formatted), the tool's status, and the image it produced."""
    call = turn.tool_call
    if turn.action == "code" and not turn.parse_error:
        text = python_html(extract_code(turn.argument or ""))
    else:
        text = f"<pre>{esc(turn_summary(turn))}</pre>"
    if call:
        text += f"<div>{tool_status(call)}</div>"
        if call.output_images:
            text += image_html(call.output_images[-1], "tool output")
        elif call.output_text and call.name != "code":
            text += f"<pre>{esc(clip(call.output_text, 300))}</pre>"
        elif not call.ok and call.stderr:
            text += f"<pre>{esc(clip(call.stderr, 300))}</pre>"
    return text


def _compare_cell(turn: Turn | None) -> str:
    if turn is None:
        return '<td class="wb-muted">—</td>'
    think = f'<div class="wb-muted">{esc(clip(turn.think, 300))}</div>' if turn.think else ""
    return f"<td>{think}{_compact_turn(turn)}</td>"


def compare_html(a: Trace, b: Trace) -> str:
    """Two traces (e.g. two checkpoints on one item) turn by turn, with outcomes and rewards."""
    def head(trace: Trace) -> str:
        return (f"<th>{outcome_badge(trace.stop_reason)} trace <code>{esc(trace.id[:12])}</code><br>"
                f"run <code>{esc(trace.run_id)}</code> · {esc(trace.model_id)}"
                f"{(' + ' + esc(trace.adapter)) if trace.adapter else ''}<br>"
                f"answer: <b>{esc(trace.final_answer) or '—'}</b>{rewards_table(trace.rewards, trace.advantage)}</th>")

    rows = [f"<tr><th></th>{head(a)}{head(b)}</tr>"]
    for index in range(max(len(a.turns), len(b.turns))):
        turn_a = a.turns[index] if index < len(a.turns) else None
        turn_b = b.turns[index] if index < len(b.turns) else None
        rows.append(f"<tr><th>turn {index + 1}</th>{_compare_cell(turn_a)}{_compare_cell(turn_b)}</tr>")
    note = "" if a.question == b.question else '<p class="wb-error">The two traces answer different questions.</p>'
    return f'{note}<table class="wb-compare">{"".join(rows)}</table>'


CSS = """
.wb-badge{color:#fff;border-radius:6px;padding:1px 8px;font-size:0.85em;margin-right:6px}
.wb-question{font-weight:600}
.wb-meta,.wb-muted{color:#64748b;font-size:0.85em}
.wb-rewards{border-collapse:collapse;margin:6px 0;font-size:0.9em}
.wb-rewards th,.wb-rewards td{border:1px solid #cbd5e1;padding:2px 8px;text-align:left}
.wb-turn{border:1px solid #e2e8f0;border-radius:8px;padding:8px 12px;margin:6px 0}
.wb-turn-title,.wb-sample-title,.wb-card-title{font-weight:600;margin-bottom:4px}
.wb-turn pre,.wb-compare pre,.wb-card pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font-size:0.85em}
.wb-error{color:#b91c1c}
.wb-tool.ok{color:#15803d}.wb-tool.bad{color:#b91c1c}
.wb-group{display:flex;gap:10px;overflow-x:auto}
.wb-card{flex:0 0 260px;border:1px solid #e2e8f0;border-radius:8px;padding:8px;font-size:0.9em}
.wb-turnlist{padding-left:18px;font-size:0.85em}
.wb-compare{border-collapse:collapse;width:100%;table-layout:fixed}
.wb-code{background:rgba(127,127,127,0.08);border-radius:6px;padding:6px 8px;white-space:pre-wrap;font-size:0.85em}
.wb-code .k{color:#7c3aed;font-weight:600}.wb-code .s{color:#15803d}.wb-code .c{color:#64748b;font-style:italic}
.wb-code .n{color:#b45309}
.wb-figures{display:flex;gap:8px;flex-wrap:wrap}.wb-figure{margin:0}.wb-figure img{max-width:160px;border-radius:4px}
.wb-figure figcaption{font-size:0.8em;color:#64748b;text-align:center}
.wb-verdict{margin:4px 0 8px}
.wb-compare td,.wb-compare th{border:1px solid #e2e8f0;vertical-align:top;padding:6px;text-align:left}
.wb-compare tr > th:first-child{width:70px}
.wb-search li{margin-bottom:4px}
.wb-raw summary{cursor:pointer;color:#475569;font-size:0.85em}
.wb-warning{background:#fef3c7;border:1px solid #f59e0b;border-radius:8px;padding:8px 12px;color:#92400e}
.dark .wb-warning{background:#422006;border-color:#b45309;color:#fde68a}
.dark .js-plotly-plot :is(.xaxislayer-above,.yaxislayer-above) text,
.dark .js-plotly-plot text:is([class$="title"],.legendtext){fill:#e5e7eb !important}
.dark .js-plotly-plot .annotation-text{fill:#cbd5e1 !important}
.dark .js-plotly-plot :is(.gridlayer,.zerolinelayer) path{stroke:rgba(255,255,255,0.14) !important}
.dark .js-plotly-plot .legend .bg{fill:transparent !important}
"""
