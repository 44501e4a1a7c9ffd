"""The layout's rules, checked on the source with `ast`: layers only point down, no cycles, small modules.

Every module belongs to one layer (LAYERS, in order); a layer may import the
layers it lists in ALLOWED, never one above it. Imports inside functions
count too: a late import is still a dependency. On top of that:
- only workbench/store.py talks SQL (with its schema, workbench/store_schema.py, its metric batches,
  workbench/store_metrics.py, and workbench/database_file.py for the file's integrity check and backups;
  the search tool its own cache and index files);
- only workbench/ui (and app.py) imports Gradio;
- nothing imports workbench.synth (the scripts that remake the demo assets)
  except those scripts themselves;
- no import cycle between modules.
Each module says what it owns in a docstring and stays under MAX_LINES.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("workbench", "tools", "trainers")
MAX_LINES = 500

# layer: module prefixes (longest match wins)
LAYERS = {
    "tools": ("tools",),
    "core": ("workbench.settings", "workbench.fields", "workbench.files", "workbench.file_roots",
             "workbench.processes", "workbench.trace",
             "workbench.trace_io", "workbench.protocol", "workbench.images", "workbench.records", "workbench.store",
             "workbench.store_schema", "workbench.database_file", "workbench.versions", "workbench"),
    "backends": ("workbench.backends",),
    "benchmark_data": ("workbench.benchmarks", "workbench.benchmarks.loaders", "workbench.benchmarks.scoring",
                       "workbench.benchmarks.mat_coding_mini", "workbench.benchmarks.mat_search_mini",
                       "workbench.benchmarks.mini_expert"),
    "rewards": ("workbench.rewards",),
    "agent": ("workbench.agent",),
    "chains": ("workbench.chains",),
    "evaluation": ("workbench.benchmarks.evaluation",),
    "jobs": ("workbench.jobs", "workbench.upkeep"),
    "services": ("workbench.run_charts", "workbench.search_service"),
    "cli": ("workbench.cli", "workbench.__main__"),
    "trainers": ("trainers",),
    "integrations": ("workbench.integrations",),
    "synth": ("workbench.synth",),
    "ui": ("workbench.ui", "app"),
}
BELOW = {  # what each layer may import besides itself
    "tools": set(),
    "core": set(),
    "backends": {"core"},
    "benchmark_data": {"core"},
    "rewards": {"core", "benchmark_data"},
    "agent": {"core", "tools", "backends", "benchmark_data", "rewards"},
    "chains": {"core", "tools", "agent"},
    "evaluation": {"core", "tools", "backends", "benchmark_data", "agent"},
    "jobs": {"core"},
    "services": {"core", "tools"},
    "cli": {"core", "tools", "backends", "benchmark_data", "rewards", "agent", "chains", "evaluation", "jobs",
            "integrations"},
    "trainers": {"core", "tools", "backends", "benchmark_data", "rewards", "agent", "chains", "evaluation", "jobs"},
    "integrations": {"core"},  # what a training script elsewhere imports: the trace shape and the store only
    "synth": {"core", "tools", "backends", "benchmark_data", "rewards", "agent", "chains", "evaluation"},
    "ui": {"core", "tools", "backends", "benchmark_data", "rewards", "agent", "chains", "evaluation", "jobs",
           "services", "trainers"},
}
SYNTH_IMPORTERS = {"trainers.demo_model"}  # remakes the demo model and its runs, with the demo world
SQL_MODULES = {"sqlite3", "sqlite_utils"}
# the store's rows and metric batches, and the database file's integrity check and backups
SQL_ALLOWED = {"workbench.store", "workbench.store_schema", "workbench.store_metrics", "workbench.database_file",
               "tools.search", "tools.search_cache", "tools.local_corpus"}
GRADIO_LAYERS = {"ui"}


def python_files() -> list[Path]:
    files = [ROOT / "app.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a project module (longest matching prefix), None for third-party modules."""
    best, best_length = None, -1
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = layer, len(prefix)
    return best


def imports_of(source: str, module: str) -> set[str]:
    """Every module imported anywhere in the source (functions included), as absolute dotted names."""
    found = set()
    package = module if module.rsplit(".", 1)[-1] == module else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return found


PROJECT_MODULES = {module_name(path) for path in python_files()}


def project_imports(source: str, module: str) -> set[str]:
    return {name for name in imports_of(source, module) if name in PROJECT_MODULES and name != module}


def violations(module: str, source: str) -> list[str]:
    """What the rules refuse in one module's imports (empty when it follows them)."""
    problems = []
    layer = layer_of(module)
    imported = imports_of(source, module)
    roots = {name.split(".")[0] for name in imported}
    for name in sorted(project_imports(source, module)):
        other = layer_of(name)
        if other == "synth" and layer != "synth" and module not in SYNTH_IMPORTERS:
            problems.append(f"{module} imports {name}: only the demo-remake scripts may use workbench.synth")
        elif other not in (layer, None) and other not in BELOW[layer] and other != "synth":
            problems.append(f"{module} ({layer}) imports {name} ({other}): an upward or sideways import")
    if "gradio" in roots and layer not in GRADIO_LAYERS:
        problems.append(f"{module} imports gradio; only workbench/ui may")
    if roots & SQL_MODULES and module not in SQL_ALLOWED:
        problems.append(f"{module} talks SQL; go through workbench/store.py")
    return problems


@pytest.mark.parametrize("path", python_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_only_point_down(path):
    assert violations(module_name(path), path.read_text(encoding="utf-8")) == []


def test_every_module_has_a_layer():
    assert [m for m in sorted(PROJECT_MODULES) if layer_of(m) is None] == []


def test_no_import_cycles():
    graph = {}
    for path in python_files():
        module = module_name(path)
        graph[module] = project_imports(path.read_text(encoding="utf-8"), module)
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules (`from pkg import module`) are one unit
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("path", python_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_hygiene(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    if path.name != "__init__.py" or source.strip():
        assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} needs a docstring saying what it owns"
    assert source.count("\n") <= MAX_LINES, f"{path.relative_to(ROOT)} is over {MAX_LINES} lines; split it"


@pytest.mark.parametrize("module, source, expected", [
    ("workbench.backends.local", "def f():\n    from workbench.ui import render\n", "upward or sideways"),
    ("workbench.store", "import workbench.agent.runner\n", "upward or sideways"),
    ("workbench.agent.runner", "from trainers import grpo\n", "upward or sideways"),
    ("workbench.jobs.watch", "from trainers.service import launch_training\n", "upward or sideways"),
    ("trainers.service", "from workbench.synth.demo_world import build_world\n", "only the demo-remake scripts"),
    ("trainers.grpo", "import gradio as gr\n", "only workbench/ui may"),
    ("workbench.agent.runner", "import sqlite3\n", "talks SQL"),
    ("tools.search", "from workbench import settings\n", "upward or sideways"),
    ("workbench.benchmarks.scoring", "from . import evaluation\n", "upward or sideways"),
])
def test_the_rules_catch_a_violation(module, source, expected):
    """Each rule can fail: a planted violation (function-level and relative imports too) is reported."""
    assert any(expected in problem for problem in violations(module, source))


def test_the_cycle_check_catches_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_ci_runs_exactly_the_readmes_test_command():
    """The README's second command is what .ci/run calls (after the README's install)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    install, test = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert ci_lines[-1] == test
    assert "pip install -r requirements.txt" in install.replace(".venv/bin/", "")
