"""Import rules and module hygiene, checked on the source with `ast`.

Layers point one way: workbench/ui (Gradio) -> services -> workbench/store.py
(the only SQL module). trainers/ and tools/ never import Gradio; tools/ is
standalone. Every module says what it owns in a docstring and stays small.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("workbench", "tools", "trainers")
SQL_MODULES = {"sqlite3", "sqlite_utils"}
# The search tool owns its own SQLite files (cache, corpus index); nothing else in tools/ may.
TOOLS_SQL_ALLOWED = {"tools/search.py", "tools/search_cache.py", "tools/local_corpus.py"}
MAX_LINES = 600


def python_files():
    files = [ROOT / "app.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", python_files(), ids=rel)
def test_layering(path):
    name = rel(path)
    roots = {n.split(".")[0] for n in imported_roots(path)}
    modules = imported_roots(path)
    in_ui = name.startswith("workbench/ui/") or name == "app.py"
    if not in_ui:
        assert "gradio" not in roots, f"{name} imports gradio; only workbench/ui may"
        assert not any(m.startswith("workbench.ui") for m in modules), f"{name} imports the UI layer"
    if name.startswith("tools/"):
        assert not roots & {"workbench", "trainers"}, f"{name}: tools/ must stay standalone"
    if roots & SQL_MODULES:
        allowed = name == "workbench/store.py" or name in TOOLS_SQL_ALLOWED
        assert allowed, f"{name} talks SQL; go through workbench/store.py"
    if in_ui and name != "app.py":
        assert "sqlite3" not in roots and "sqlite_utils" not in roots


@pytest.mark.parametrize("path", python_files(), ids=rel)
def test_module_hygiene(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    if path.name != "__init__.py" or source.strip():
        assert ast.get_docstring(tree), f"{rel(path)} needs a docstring saying what it owns"
    assert source.count("\n") <= MAX_LINES, f"{rel(path)} is over {MAX_LINES} lines; split it"


def test_layering_check_catches_a_violation(tmp_path, monkeypatch):
    """The rule above must be able to fail: a tools module importing gradio is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text('"""x"""\nimport gradio\nfrom workbench import store\n')
    assert {"gradio", "workbench"} <= {n.split(".")[0] for n in imported_roots(bad)}


def test_ci_runs_exactly_the_readmes_test_command():
    """The README's second command is what .ci/run calls (after the README's install)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    install, test = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert ci_lines[-1] == test
    assert "pip install -r requirements.txt" in install.replace(".venv/bin/", "")
