"""The Visual-ARFT turn protocol: prompts, message layouts and parsing of model turns.

Two ways for a model to act (see ../shared/PROTOCOL.md for the tag facts):
- "tags": `<think>..</think>` then one of `<search>`, `<problem>`, `<code>`,
  `<answer>`; tool results come back as `<information>` / `<tips>` text.
- "native": Qwen3-VL function calling, `<tool_call>{"name": .., "arguments": ..}</tool_call>`,
  with the final answer still in `<answer>`.
Two conversation layouts: "single_user" (the paper's runner: one user message
holding the image and the growing chain) and "chat" (alternating assistant
and tool/user messages). Parsing never raises: a malformed turn becomes a
`ParsedTurn` whose `error` says what was wrong.
"""

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("search", "problem", "code", "answer")
PROBLEM_LABELS = ("rotation90", "rotation180", "dark", "overexposure", "blur", "noise", "crop", "none")
PROTOCOLS = ("tags", "native")
LAYOUTS = ("single_user", "chat")
MAX_TURNS = 5
INPUT_PLACEHOLDER = "path_to_input_image.jpg"
OUTPUT_PLACEHOLDER = "path_to_output_image.jpg"
TAG_STOP_STRINGS = ["</search>", "</problem>", "</code>", "</answer>"]
NATIVE_STOP_STRINGS = ["</tool_call>", "</answer>"]
TOOL_ARGUMENT = {"search": "query", "code": "code"}

_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_ACTION_NAMES = "|".join(ACTIONS)
ACTION_PATTERN = re.compile(rf"<({_ACTION_NAMES})>(.*?)</\1>", re.S)  # an action block: group 1 its name, 2 its body
_OPEN_ACTION = re.compile(rf"<({_ACTION_NAMES})>", re.S)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_FENCE = re.compile(r"```(?:python|py)?\s*\n?(.*?)```", re.S)
_CHAIN_TAG = re.compile(r"<(query|think|search|problem|code|answer|information|tips)>(.*?)</\1>", re.S)
_BOX = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\]")


@dataclass
class ParsedTurn:
    """A model turn split into thought and action; `error` is set when it could not be."""

    raw: str
    think: str | None = None
    action: str | None = None
    argument: str | None = None
    error: str | None = None


def parse_turn(text: str, protocol: str = "tags", allowed: tuple[str, ...] | None = None) -> ParsedTurn:
    """Parse one model turn; never raises.

    >>> parse_turn("<think>dim</think><problem>{'dark'}</problem>").action
    'problem'
    >>> parse_turn("<think>hm</think>").error
    'no action: expected one of <search>, <problem>, <code>, <answer> after </think>'
    """
    text = text or ""
    think_match = _THINK.search(text)
    think = think_match.group(1).strip() if think_match else None
    rest = text[think_match.end():] if think_match else text
    if protocol == "native":
        parsed = _parse_native(text, rest, think)
    else:
        parsed = _parse_tags(text, rest, think)
    if parsed.error is None and allowed is not None and parsed.action not in allowed:
        parsed.error = f"<{parsed.action}> is not available here; use one of {', '.join(allowed)}"
    return parsed


def _parse_tags(text: str, rest: str, think: str | None) -> ParsedTurn:
    match = ACTION_PATTERN.search(rest)
    if match:
        return ParsedTurn(text, think, match.group(1), match.group(2).strip())
    opened = _OPEN_ACTION.search(rest)
    if opened:
        error = f"<{opened.group(1)}> is never closed (the turn may have hit the token limit)"
    else:
        where = " after </think>" if think is not None else ""
        error = f"no action: expected one of {', '.join(f'<{a}>' for a in ACTIONS)}{where}"
    return ParsedTurn(text, think, error=error)


def _parse_native(text: str, rest: str, think: str | None) -> ParsedTurn:
    call = _TOOL_CALL.search(rest)
    answer = re.search(r"<answer>(.*?)</answer>", rest, re.S)
    if answer and (not call or answer.start() < call.start()):
        return ParsedTurn(text, think, "answer", answer.group(1).strip())
    if not call:
        if "<tool_call>" in rest:
            return ParsedTurn(text, think, error="<tool_call> is never closed")
        return ParsedTurn(text, think, error="no action: expected a <tool_call> or an <answer>")
    try:
        payload = json.loads(call.group(1).strip())
    except json.JSONDecodeError as exc:
        return ParsedTurn(text, think, error=f"tool call is not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return ParsedTurn(text, think, error='tool call needs {"name": ..., "arguments": {...}}')
    name, arguments = payload["name"], payload.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = {TOOL_ARGUMENT.get(name, "input"): arguments}
    if name not in TOOL_ARGUMENT:
        return ParsedTurn(text, think, error=f"unknown tool {name!r}; tools are {', '.join(TOOL_ARGUMENT)}")
    value = arguments.get(TOOL_ARGUMENT[name]) if isinstance(arguments, dict) else None
    if not isinstance(value, str):
        return ParsedTurn(text, think, error=f"tool {name} needs a string argument {TOOL_ARGUMENT[name]!r}")
    return ParsedTurn(text, think, name, value)


def extract_code(argument: str) -> str:
    """The Python source inside a `<code>` argument (fenced or bare).

    >>> extract_code("```python\\nprint(1)\\n```")
    'print(1)\\n'
    """
    match = _FENCE.search(argument)
    return match.group(1) if match else argument.strip() + "\n"


def parse_problem_labels(argument: str) -> tuple[list[str], str | None]:
    """Degradation labels named in a `<problem>` argument, and an error if any are unknown.

    >>> parse_problem_labels("{'dark', 'rotation90'}")
    (['dark', 'rotation90'], None)
    """
    text = argument.strip()
    try:
        value = ast.literal_eval(text)
        items = [value] if isinstance(value, str) else list(value)
    except (ValueError, SyntaxError, TypeError):
        items = re.findall(r"[A-Za-z0-9_]+", text)
    labels = sorted({str(item).strip().lower() for item in items if str(item).strip()})
    unknown = [label for label in labels if label not in PROBLEM_LABELS]
    if not labels:
        return [], "empty <problem>: name at least one of " + ", ".join(PROBLEM_LABELS)
    if unknown:
        return labels, f"unknown problem label(s) {unknown}; use {', '.join(PROBLEM_LABELS)}"
    return labels, None


def tips_for(labels: list[str]) -> str:
    """The `<tips>` hint the runner appends after a `<problem>` step."""
    if "crop" in labels:
        body = (f"Write Python code that crops the box [x_min, y_min, x_max, y_max] named in the question "
                f"(0-1000 scale of width and height) from {INPUT_PLACEHOLDER} and saves it to "
                f"{OUTPUT_PLACEHOLDER}.")
    elif labels == ["none"] or not labels:
        body = "The image needs no processing. Answer the question directly."
    else:
        body = (f"Write Python code that reads {INPUT_PLACEHOLDER}, fixes {', '.join(labels)}, and saves "
                f"the result to {OUTPUT_PLACEHOLDER}.")
    return f"<tips> {body} </tips>"


def find_box(question: str) -> tuple[float, float, float, float] | None:
    """The first 0..1000 box `[x0, y0, x1, y1]` in a question, if any."""
    match = _BOX.search(question)
    return tuple(float(v) for v in match.groups()) if match else None  # type: ignore[return-value]


def query_text(question: str) -> str:
    return f"<query> {question.strip()} </query>"


def system_prompt(tools: tuple[str, ...], protocol: str = "tags") -> str:
    """Instructions for the model, naming only the actions that are available."""
    lines = ["You answer questions about images. Work in turns. Each turn starts with your reasoning "
             "inside <think> </think>, followed by exactly one action."]
    if protocol == "native":
        if tools:
            lines.append("To use a tool, call it with <tool_call>{\"name\": ..., \"arguments\": {...}}"
                         "</tool_call>; its result comes back in the next message.")
    else:
        if "code" in tools:
            lines.append("<problem> {'label', ...} </problem> names what is wrong with the image, from: "
                         + ", ".join(PROBLEM_LABELS) + ". You then get <tips>.")
            lines.append(f"<code> ```python ...``` </code> runs Python that reads {INPUT_PLACEHOLDER} "
                         f"and writes {OUTPUT_PLACEHOLDER}; the next turn shows you the new image.")
        if "search" in tools:
            lines.append("<search> one query </search> searches the web; results come back inside "
                         "<information> </information>.")
    lines.append(f"<answer> short answer </answer> ends the task. You have at most {MAX_TURNS} turns.")
    return "\n".join(lines)


def tool_schemas(tools: tuple[str, ...]) -> list[dict[str, Any]]:
    """JSON schemas of the tools for native function calling."""
    described = {
        "search": ("Search the web and return the top result snippets.", "query", "One search query."),
        "code": (f"Run Python that reads {INPUT_PLACEHOLDER} and writes {OUTPUT_PLACEHOLDER}.",
                 "code", "Python source code."),
    }
    schemas = []
    for name in tools:
        summary, arg, arg_help = described[name]
        schemas.append({"type": "function", "function": {
            "name": name, "description": summary,
            "parameters": {"type": "object", "properties": {arg: {"type": "string", "description": arg_help}},
                           "required": [arg]}}})
    return schemas


@dataclass
class Step:
    """A finished turn as the next prompt needs it: what the model said and what came back."""

    raw: str
    feedback: str | None = None
    feedback_image: Any = None
    tool_name: str | None = None


def build_messages(question: str, image: Any, steps: list[Step], *, system: str,
                   layout: str = "single_user", protocol: str = "tags") -> list[dict[str, Any]]:
    """The conversation to generate the next turn from.

    `image` is the image the model sees now (the latest tool output image in
    the single_user layout, the input in chat); it may be a path, a PIL image
    or an "sha256:" reference; it is passed through untouched.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    if layout == "single_user":
        chain = "".join(step.raw + (step.feedback or "") for step in steps)
        text = query_text(question) + ("\n" + chain if chain else "")
        messages.append({"role": "user", "content": [{"type": "image", "image": image},
                                                     {"type": "text", "text": text}]})
        return messages
    messages.append({"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": query_text(question)}]})
    for step in steps:
        messages.append({"role": "assistant", "content": step.raw})
        if step.feedback is None and step.feedback_image is None:
            continue
        blocks: list[dict[str, Any]] = []
        if step.feedback_image is not None:
            blocks.append({"type": "image", "image": step.feedback_image})
        blocks.append({"type": "text", "text": step.feedback or ""})
        role = "tool" if protocol == "native" and step.tool_name else "user"
        messages.append({"role": role, "content": blocks})
    return messages


@dataclass
class ChainTurn:
    """One model turn recovered from a raw reasoning chain, with its exact text.

    `raw` is the chain's own bytes from the turn's first tag to the end of its
    action (the model's output as the runner appended it); `feedback_raw` the
    chain's bytes of the `<tips>` / `<information>` blocks that follow it.
    """

    raw: str
    think: str | None
    action: str | None
    argument: str | None
    error: str | None = None
    feedback: list[tuple[str, str]] = field(default_factory=list)  # (tag, text): information/tips
    feedback_raw: str | None = None


@dataclass
class RunnerChain:
    """A raw chain as the paper's runner writes it: prompt, question, turns, and text outside any tag."""

    preamble: str  # exact text before <query>: the system prompt the runner put in front ("" if none)
    question: str | None
    turns: list[ChainTurn]
    stray: list[str] = field(default_factory=list)


_CHAIN_OPEN = re.compile(r"<(query|think|search|problem|code|answer|information|tips)>")
_QUERY_END = re.compile(r"</?query>")  # the released runner closes the question with a second <query>


def _query(text: str) -> tuple[str, str | None, int]:
    """(preamble, question, where the turns start); refuses a prompt it cannot tell from the turns."""
    opened = re.search(r"<query>", text)
    if opened is None:
        first = _CHAIN_OPEN.search(text)
        lead = text[:first.start()] if first else text
        if lead.strip():
            raise ValueError("the chain starts with text before its first tag (a system prompt?) and has no <query> "
                             "to show where the prompt ends; remove the prompt or keep the <query> line")
        return "", None, first.start() if first else len(text)
    closed = _QUERY_END.search(text, opened.end())
    if closed is None:
        raise ValueError("the chain's <query> is never closed (with </query> or a second <query>)")
    return text[:opened.start()], text[opened.end():closed.start()].strip(), closed.end()


def parse_chain(raw: str) -> RunnerChain:
    """Split a raw Visual-ARFT chain into prompt, question and turns, keeping every turn's exact text.

    Accepts what the released runner writes: an optional system prompt in
    front, `<query> Q <query>` or `<query> Q </query>`, turns of `<think>` +
    one action, and `<tips>` / `<information>` blocks after them. A thought
    starts a new turn; an action without a preceding thought still forms one.
    Text outside any tag is collected in `stray`. Raises ValueError when a
    prompt is in front but no `<query>` marks where it ends.

    >>> chain = parse_chain("Prompt <think> x </think>\\n<query> Q <query>\\n<think> t </think>\\n<search> s </search>"
    ...     "\\n<information> 1. Content:x </information> \\n<think>u</think><answer>A</answer>")
    >>> chain.question, [(t.action, t.argument) for t in chain.turns], chain.turns[0].raw
    ('Q', [('search', 's'), ('answer', 'A')], '<think> t </think>\\n<search> s </search>')
    """
    text = raw or ""
    preamble, question, position = _query(text)
    turns: list[ChainTurn] = []
    stray: list[str] = []
    current: ChainTurn | None = None
    start = feedback_start = 0
    while True:
        opened = _CHAIN_OPEN.search(text, position)
        gap = text[position:opened.start() if opened else len(text)]
        if gap.strip():
            stray.append(gap.strip())
        if opened is None:
            break
        tag = opened.group(1)
        close = text.find(f"</{tag}>", opened.end())
        end = close + len(tag) + 3 if close >= 0 else len(text)
        body = text[opened.end():close if close >= 0 else len(text)].strip()
        unclosed = f"<{tag}> is never closed (the turn may have hit the token limit)" if close < 0 else None
        if tag == "query":
            stray.append(text[opened.start():end])
        elif tag in ("information", "tips") and current is not None:
            if not current.feedback:
                feedback_start = opened.start()
            current.feedback.append((tag, body))
            current.feedback_raw = text[feedback_start:end]
        elif tag in ("information", "tips"):
            stray.append(text[opened.start():end])
        else:
            new_turn = tag == "think" or current is None or current.action is not None or bool(current.feedback)
            if new_turn:
                current = ChainTurn(raw="", think=None, action=None, argument=None)
                turns.append(current)
                start = opened.start()
            if tag == "think":
                current.think = body
            else:
                current.action, current.argument = tag, body
            current.raw = text[start:end]
            current.error = unclosed or current.error
        position = end
    for turn in turns:
        if turn.action is None and turn.error is None:
            turn.error = "no action in this step of the chain"
    return RunnerChain(preamble, question, turns, stray)
