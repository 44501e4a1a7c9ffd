"""The tools as a model calls them, the same in the agent runner and in training rollouts.

Each tool adapter turns a protocol argument (a `<code>` block, a `<search>`
query) into a call of a real tool (`tools/`, which knows nothing of the
agent) and returns a `ToolCall` (workbench.trace): the text fed back to the
model, the image files it wrote (`output_files`), and how it went.
`call_tool` is the one way to call them -- it times the call and turns a
tool that raises into a failed call with the error as its text -- and
`problem_feedback` answers a `<problem>` step; the runner and the training
environment both use them, so a model sees byte-identical tool text at
inference and in training.
"""

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tools.code_sandbox import CodeSandbox, SandboxUnavailable, shared_sandbox
from tools.search import SearchTool
from workbench import protocol, settings
from workbench.trace import ToolCall

FEEDBACK_CHARS = 1200
ISOLATION_NAMES = {"bwrap": "bubblewrap namespaces + Landlock + seccomp",
                   "landlock": "Landlock + seccomp (no namespaces: bubblewrap is unavailable here)",
                   "unsafe-none": "nothing but a separate process (unsafe-none)"}


@dataclass
class ToolContext:
    """What a tool may see of the episode that called it."""

    image: Path
    original_image: Path
    workdir: Path
    question: str


class AgentTool(Protocol):
    name: str

    def __call__(self, argument: str, context: ToolContext) -> ToolCall: ...


def call_tool(lookup: Callable[[str], AgentTool], name: str, argument: str, context: ToolContext) -> ToolCall:
    """Call the tool `lookup(name)` gives; timed, and a tool that raises (or cannot be found) fails the call.

    >>> def missing(name):
    ...     raise KeyError(name)
    >>> call = call_tool(missing, "search", "q", None)
    >>> call.ok, call.output_text
    (False, "<information> tool error: KeyError: 'search' </information>")
    """
    started = time.perf_counter()
    try:
        call = lookup(name)(argument, context)
    except Exception as exc:  # a tool bug fails this call, not the batch or the training run
        error = f"{type(exc).__name__}: {exc}"
        call = ToolCall(name=name, argument=argument, output_text=f"<information> tool error: {error} </information>",
                        ok=False, error=error)
    call.latency_s = time.perf_counter() - started
    return call


def problem_feedback(argument: str) -> tuple[list[str], str, str | None]:
    """A `<problem>` step's labels, the `<tips>` hint that answers it, and what was wrong with it (or None).

    >>> labels, tips, error = problem_feedback("{'dark', 'foggy'}")
    >>> labels, tips == f"<tips> {error} </tips>", error.startswith("unknown problem label(s) ['foggy']")
    (['dark', 'foggy'], True, True)
    """
    labels, error = protocol.parse_problem_labels(argument)
    return labels, (f"<tips> {error} </tips>" if error else protocol.tips_for(labels)), error


def _clip(text: str, limit: int = FEEDBACK_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " ...[truncated]"


def code_tool_status() -> str:
    """One plain sentence: which isolation runs model code here, or why code execution is off."""
    try:
        sandbox = shared_sandbox()
    except SandboxUnavailable as exc:
        return f"Code execution is off on this host: {exc}"
    return f"Model code runs isolated by {ISOLATION_NAMES.get(sandbox.isolation_in_use, sandbox.isolation_in_use)}."


class CodeTool:
    """Runs `<code>` in the sandbox on the episode's current image.

    Without a sandbox of its own it uses the process-wide warm one; where no
    isolation works, each call fails with the reason instead of the run crashing.
    """

    name = "code"

    def __init__(self, sandbox: CodeSandbox | None = None):
        self.own_sandbox = sandbox
        self._counter = itertools.count()

    @property
    def sandbox(self) -> CodeSandbox:
        return self.own_sandbox or shared_sandbox()

    def close(self) -> None:
        if self.own_sandbox is not None:
            self.own_sandbox.close()

    def __call__(self, argument: str, context: ToolContext) -> ToolCall:
        try:
            sandbox = self.sandbox
        except SandboxUnavailable as exc:
            return ToolCall(self.name, argument, "<information> Code execution is off on this host. </information>",
                            ok=False, error=f"code execution is off on this host: {exc}")
        code = protocol.extract_code(argument)
        job_dir = Path(context.workdir) / f"code-{next(self._counter)}"
        job_dir.mkdir(parents=True, exist_ok=True)
        # The paper's runner fills crop slices with the question's box; that box only fits the original image.
        box = protocol.find_box(context.question) if context.image == context.original_image else None
        result = sandbox.run(code, context.image, job_dir=job_dir, crop_box=box)
        details = {k: v for k, v in result.to_dict().items() if k not in ("stdout", "stderr")}
        if result.ok and result.output_images:
            text = f"<information> {_clip(result.stdout)} </information>" if result.stdout.strip() else ""
        elif result.ok:
            text = (f"<information> The code ran but wrote no {protocol.OUTPUT_PLACEHOLDER}. "
                    f"{_clip(result.stdout)} </information>")
        else:
            where = f" (line {result.error_line})" if result.error_line else ""
            text = f"<information> Code error{where}: {_clip(result.error or result.stderr)} </information>"
        ok = result.ok and bool(result.output_images)
        error = None if ok else (result.error or "no output image")
        return ToolCall(self.name, argument, text, ok=ok, error=error, stdout=result.stdout, stderr=result.stderr,
                        details=details, output_files=list(result.output_images))


class SearchAgentTool:
    """Answers `<search>` with the search tool's `<information>` block."""

    name = "search"

    def __init__(self, search: SearchTool):
        self.search = search

    def __call__(self, argument: str, context: ToolContext) -> ToolCall:
        response = self.search.search(argument)
        text = response.text if response.error is None else f"<information> {response.error} </information>"
        return ToolCall(self.name, argument, text, ok=response.error is None, error=response.error,
                        details=response.to_dict())


def build_tools(names: tuple[str, ...], *, search_backend: str = "local", corpus: str | Path | None = None,
                search_mode: str = "cache-first", search_k: int = 4) -> dict[str, AgentTool]:
    """The runner's tools by name, wired to the shared search cache and a sandbox."""
    tools: dict[str, AgentTool] = {}
    if "code" in names:
        tools["code"] = CodeTool()
    if "search" in names:
        tool = SearchTool(search_backend, corpus=corpus, cache_path=settings.search_cache_path(),
                          mode=search_mode, k=search_k)
        tools["search"] = SearchAgentTool(tool)
    return tools
