"""Shared test fixtures: every test gets its own WORKBENCH_HOME."""

from pathlib import Path

import pytest

SHARED_REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"


@pytest.fixture(autouse=True)
def workbench_home(tmp_path, monkeypatch):
    """Point WORKBENCH_HOME at a fresh folder so tests never touch sessions/."""
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    return home


@pytest.fixture
def shared_reference():
    """../shared/reference, or skip when it is absent (e.g. outside CI)."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference is not present")
    return SHARED_REFERENCE
