"""The multi-turn tool environment that TRL's GRPOTrainer drives through `environment_factory=`.

One `ToolEpisodeEnvironment` instance is one rollout: `reset(**row)` starts
an episode on a dataset row (question, image file), and its public methods
are the tools the model may call (TRL exposes every public method as a tool
and parses calls with the processor's response template, see
trainers.chat_format). `code` runs the model's Python in the workbench's
sandboxed code tool on the episode's current image and returns the output
image plus the tool's text, so the next turn sees the processed image (in
the generation and in the training forward pass); `search` returns the
search tool's `<information>` block; `problem` (tag protocol) returns the
runner's `<tips>` hint. Results are the same texts and images the agent
runner gives a model at inference (workbench.agent.tools), so RL trains the
loop the playground and evaluation run.

Every call is recorded as the workbench's one tool-result shape
(`workbench.trace.ToolCall`, made by `workbench.agent.tools.call_tool` as the
runner makes it): the rewards read execution results from them (`code_ok`,
`last_output_image`) and the logging callback turns them into trace tool
calls and the tool-call / tool-failure rates. Tools are
shared by all instances (one sandbox worker, one search cache) through a
`ToolBox`, built once per training process. A row may name its own search
corpus (`search_corpus`: questions from many small worlds, each with its
documents); the ToolBox keeps a search tool for the few corpora in use.
"""

import shutil
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from trainers.chat_format import tool_docstring
from workbench import settings
from workbench.agent.tools import AgentTool, ToolContext, call_tool, problem_feedback
from workbench.trace import ToolCall

REAL_TOOLS = ("code", "search")  # `problem` is an action with a hint, not a tool: it is not counted as one
CORPUS_TOOLS_KEPT = 16  # per-row corpora: one search tool (index connections) each, so keep only the recent ones


class ToolBox:
    """The real tools for rollouts, shared by every environment instance of a training process."""

    def __init__(self, names: tuple[str, ...], *, search_backend: str = "local", search_corpus: str | None = None,
                 search_mode: str = "cache-first", tools: dict[str, AgentTool] | None = None):
        if tools is None:
            from workbench.agent.tools import build_tools

            # without a job-wide corpus, search is built per row corpus (rows without one get a clear error)
            built = tuple(n for n in names if n != "search" or search_corpus or search_backend != "local")
            tools = build_tools(built, search_backend=search_backend, corpus=search_corpus, search_mode=search_mode)
        self.names = tuple(names)
        self.tools = tools
        self.search_mode = search_mode
        self.corpus_tools: OrderedDict[str, AgentTool] = OrderedDict()
        self.scratch = settings.scratch_dir() / f"train-{uuid.uuid4().hex[:8]}"

    def tool(self, name: str, corpus: str | None = None) -> AgentTool:
        """The tool to call: search over the row's own corpus when it has one, else the job's tool."""
        if name != "search" or not corpus:
            if name not in self.tools:
                raise ValueError("this row has no search corpus and the job set none: give the job "
                                 "search_corpus or the rows a corpus field")
            return self.tools[name]
        if corpus not in self.corpus_tools:
            from workbench.agent.tools import build_tools

            self.corpus_tools[corpus] = build_tools(("search",), corpus=corpus, search_mode=self.search_mode)["search"]
            if len(self.corpus_tools) > CORPUS_TOOLS_KEPT:
                self.corpus_tools.popitem(last=False)
        self.corpus_tools.move_to_end(corpus)
        return self.corpus_tools[corpus]

    def call(self, name: str, argument: str, context: ToolContext, corpus: str | None = None) -> ToolCall:
        return call_tool(lambda tool_name: self.tool(tool_name, corpus), name, argument, context)

    def close(self) -> None:
        close_code_tool = getattr(self.tools.get("code"), "close", None)
        if close_code_tool is not None:
            close_code_tool()
        shutil.rmtree(self.scratch, ignore_errors=True)


class ToolEpisodeEnvironment:
    """State of one rollout; subclasses made by `environment_class` add the tool methods."""

    protocol_name = "tags"

    def __init__(self, toolbox: ToolBox):
        self.toolbox = toolbox
        self.records: list[ToolCall] = []
        self.problem_labels: list[str] | None = None
        self.question = ""
        self.search_corpus: str | None = None
        self.original_image: Path | None = None
        self.current_image: Path | None = None
        self.workdir: Path | None = None

    def reset(self, **row: Any) -> None:
        """Start an episode on a dataset row; the prompt already holds the question and image."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.records = []
        self.problem_labels = None
        self.question = row.get("question") or ""
        self.search_corpus = row.get("search_corpus")
        image_file = row.get("image_file")
        self.original_image = self.current_image = Path(image_file) if image_file else None
        self.workdir = self.toolbox.scratch / uuid.uuid4().hex[:12]
        return None

    # -- what the rewards and the logging callback read ------------------------
    @property
    def tool_calls(self) -> list[ToolCall]:
        return [r for r in self.records if r.name in REAL_TOOLS]

    @property
    def code_ok(self) -> bool | None:
        """Did every code call run and write an image (None: no code was run)."""
        runs = [r for r in self.records if r.name == "code"]
        return all(r.ok for r in runs) if runs else None

    @property
    def last_output_image(self) -> str | None:
        images = [image for r in self.records if r.name == "code" for image in r.output_files]
        return images[-1] if images else None

    # -- tool bodies -----------------------------------------------------------
    def _run_tool(self, name: str, argument: str) -> str | list[dict[str, Any]]:
        if self.current_image is None and name == "code":
            call = ToolCall(name, argument, "<information> no image in this episode </information>", ok=False,
                            error="no image")
            self.records.append(call)
            return call.output_text
        context = ToolContext(self.current_image, self.original_image, self.workdir, self.question)
        call = self.toolbox.call(name, argument, context, self.search_corpus)
        self.records.append(call)
        if not call.output_files:
            return call.output_text
        self.current_image = Path(call.output_files[-1])  # the next code call works on what this one produced
        with Image.open(call.output_files[-1]) as opened:
            shown = opened.convert("RGB")
        return [{"type": "image", "image": shown}, {"type": "text", "text": call.output_text}]

    def _problem(self, argument: str) -> str:
        self.problem_labels, text, error = problem_feedback(argument)
        self.records.append(ToolCall("problem", argument, text, ok=error is None, error=error))
        return text


def _code_tags(self, argument: str):
    return self._run_tool("code", argument)


def _search_tags(self, argument: str):
    return self._run_tool("search", argument)


def _problem_tags(self, argument: str):
    return self._problem(argument)


def _code_native(self, code: str):
    return self._run_tool("code", code)


def _search_native(self, query: str):
    return self._run_tool("search", query)


# The parameter names are part of the schema TRL renders: tags share one argument name (the response
# template cannot vary it), native calls use the workbench's tool schemas (query / code).
_TOOL_BODIES = {("tags", "code"): _code_tags, ("tags", "search"): _search_tags, ("tags", "problem"): _problem_tags,
                ("native", "code"): _code_native, ("native", "search"): _search_native}


def _tool_method(name: str, protocol_name: str) -> Callable[..., Any]:
    """A copy of the tool body named `name`, with the docstring TRL turns into the tool's description."""
    body = _TOOL_BODIES[(protocol_name, name)]
    method = types.FunctionType(body.__code__, body.__globals__, name, body.__defaults__, body.__closure__)
    method.__doc__ = tool_docstring(name, protocol_name)[1]
    method.__annotations__ = dict(body.__annotations__)
    return method


def environment_class(tool_names: tuple[str, ...], protocol_name: str) -> type[ToolEpisodeEnvironment]:
    """An environment class exposing exactly `tool_names` (plus `problem` with tags when code is on)."""
    names = list(tool_names)
    if protocol_name == "tags" and "code" in names:
        names.append("problem")
    methods: dict[str, Any] = {name: _tool_method(name, protocol_name) for name in names}
    methods["protocol_name"] = protocol_name
    return type(f"{'And'.join(n.title() for n in names)}Environment", (ToolEpisodeEnvironment,), methods)


def tool_use_metrics(environments: list[ToolEpisodeEnvironment], labels: list[Any] | None = None) -> dict[str, float]:
    """Tool use of one batch of rollouts: `tools/call_rate` (share of episodes with a real tool call),
    `tools/calls_per_episode`, `tools/failure_rate` (of calls), and, when the rows carry problem labels,
    `tools/call_rate_degraded` (the call rate on items whose image needs repair, i.e. labels other than none).

    >>> class Env:
    ...     def __init__(self, calls): self.tool_calls = calls
    >>> ok, bad = ToolCall("code", "x", "", ok=True), ToolCall("code", "x", "", ok=False)
    >>> tool_use_metrics([Env([ok]), Env([]), Env([ok, bad]), Env([])], [["dark"], ["crop"], ["none"], None])
    {'tools/call_rate': 0.5, 'tools/calls_per_episode': 0.75, 'tools/failure_rate': 0.3333333333333333, \
'tools/call_rate_degraded': 0.5}
    """
    calls = [env.tool_calls for env in environments]
    if not calls:
        return {}
    count = sum(len(c) for c in calls)
    failed = sum(1 for c in calls for record in c if not record.ok)
    metrics = {"tools/call_rate": sum(1 for c in calls if c) / len(calls),
               "tools/calls_per_episode": count / len(calls),
               "tools/failure_rate": failed / count if count else 0.0}
    degraded = [bool(c) for c, row in zip(calls, labels or [], strict=False) if row and set(row) != {"none"}]
    if degraded:
        metrics["tools/call_rate_degraded"] = sum(degraded) / len(degraded)
    return metrics


def environment_factory(toolbox: ToolBox, protocol_name: str) -> Callable[[], ToolEpisodeEnvironment]:
    """The `environment_factory=` for GRPOTrainer: one fresh environment per rollout slot."""
    cls = environment_class(toolbox.names, protocol_name)
    return lambda: cls(toolbox)
