"""Adapters that let the agent runner call the real tools (code sandbox, search).

Each adapter turns a protocol argument (a `<code>` block, a `<search>` query)
into a tool call and the tool's result into the text and images fed back to
the model. The tools themselves live in `tools/` and know nothing of the
runner.
"""

import itertools
from pathlib import Path

from tools.code_sandbox import CodeSandbox, SandboxUnavailable, shared_sandbox
from tools.search import SearchTool
from workbench import protocol, settings
from workbench.agent.runner import AgentTool, ToolContext, ToolOutcome

FEEDBACK_CHARS = 1200
ISOLATION_NAMES = {"bwrap": "bubblewrap namespaces + Landlock + seccomp",
                   "landlock": "Landlock + seccomp (no namespaces: bubblewrap is unavailable here)",
                   "unsafe-none": "nothing but a separate process (unsafe-none)"}


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

    def __call__(self, argument: str, context: ToolContext) -> ToolOutcome:
        try:
            sandbox = self.sandbox
        except SandboxUnavailable as exc:
            return ToolOutcome(text="<information> Code execution is off on this host. </information>", ok=False,
                               error=f"code execution is off on this host: {exc}")
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
        return ToolOutcome(text=text, images=[Path(p) for p in result.output_images], ok=ok, error=error,
                           stdout=result.stdout, stderr=result.stderr, details=details)


class SearchAgentTool:
    """Answers `<search>` with the search tool's `<information>` block."""

    name = "search"

    def __init__(self, search: SearchTool):
        self.search = search

    def __call__(self, argument: str, context: ToolContext) -> ToolOutcome:
        response = self.search.search(argument)
        text = response.text if response.error is None else f"<information> {response.error} </information>"
        return ToolOutcome(text=text, ok=response.error is None, error=response.error,
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
