"""Shared test fixtures: every test gets its own WORKBENCH_HOME; fault tests can get a small disk to fill."""

import subprocess
from pathlib import Path

import pytest

SHARED_REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"


@pytest.fixture(autouse=True)
def workbench_home(tmp_path, monkeypatch):
    """Point WORKBENCH_HOME at a fresh folder so tests never touch sessions/."""
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_FILE_ROOTS", str(tmp_path))  # the UI may read the test's own files
    return home


@pytest.fixture
def shared_reference():
    """../shared/reference, or skip when it is absent (e.g. outside CI)."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference is not present")
    return SHARED_REFERENCE


@pytest.fixture
def small_tmpfs(tmp_path):
    """Mount a fresh tmpfs of `size_mb` MiB (a disk that fills up on demand); skips where mounting is refused.

    Mounting needs root outside an unprivileged container; the fault tests that need a full disk skip cleanly
    elsewhere. Unmounted (lazily) after the test.
    """
    mounted = []

    def mount(size_mb: int) -> Path:
        where = tmp_path / f"tmpfs-{len(mounted)}"
        where.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc}")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)

