"""Where runtime data lives: every path derives from one setting, WORKBENCH_HOME.

The default is the repository's `sessions/` folder. Functions (not constants)
so that tests and child processes can point WORKBENCH_HOME elsewhere.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The runtime data folder (created on first use)."""
    path = Path(os.environ.get("WORKBENCH_HOME") or REPO_ROOT / "sessions")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sub(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path() -> Path:
    """The SQLite database holding runs, jobs, metrics and traces."""
    return home() / "workbench.db"


def images_dir() -> Path:
    """Content-addressed image files and their thumbnails."""
    return _sub("images")


def models_dir() -> Path:
    """Locally built models (the embedded tiny model lives here)."""
    return _sub("models")


def checkpoints_dir() -> Path:
    """Training checkpoints (LoRA adapters), one folder per job."""
    return _sub("checkpoints")


def jobs_dir() -> Path:
    """Per-job logs and scratch folders."""
    return _sub("jobs")


def scratch_dir() -> Path:
    """Per-episode tool working folders (code sandbox jobs)."""
    return _sub("scratch")


def search_cache_path() -> Path:
    """The search tool's persistent cache, shared by playground, eval and training."""
    return home() / "search_cache.db"
