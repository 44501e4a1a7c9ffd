"""Where things live: runtime data under one setting, WORKBENCH_HOME, and the shipped demo assets.

Runtime data defaults to the repository's `sessions/` folder; these are
functions (not constants) so that tests and child processes can point
WORKBENCH_HOME elsewhere. The demo assets are part of the checkout
(`workbench/demo/`, remade by `python -m trainers.demo_model` and
`python -m workbench.synth.demo_assets`); code that uses them reads their
paths here, never from the scripts that make them.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# -- shipped demo assets (workbench/demo) ---------------------------------------------------
DEMO_DIR = REPO_ROOT / "workbench" / "demo"
DEMO_MODEL_DIR = DEMO_DIR / "model"  # the embedded demo model, with its model card (README.md)
DEMO_MODEL_ID = "demo-tiny-qwen2.5-vl"  # the id its traces record
DEMO_ITEMS_DIR = DEMO_DIR / "items"  # held-out demo items, one per kind of problem
DEMO_CODING_ITEMS = DEMO_ITEMS_DIR / "mat_coding_mini.json"
DEMO_SEARCH_ITEMS = DEMO_ITEMS_DIR / "mat_search_mini.json"
DEMO_CORPUS = DEMO_ITEMS_DIR / "corpus.jsonl"  # the held-out world's search corpus
DEMO_TRACES_FILE = DEMO_DIR / "traces.jsonl"  # the demo model's own episodes on the demo items
DEMO_GRPO_RUN = DEMO_DIR / "grpo_run"  # a real GRPO run from the demo model (run.json + traces)
# click-to-train's starting policy: a LoRA adapter on the demo model that mostly answers without its code tool
DEMO_START_ADAPTER = DEMO_DIR / "start_adapter"


def demo_model_dir() -> Path:
    """The demo model's folder; FileNotFoundError says how to make it when it is missing."""
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(f"the demo model is missing from {DEMO_MODEL_DIR}; make it with "
                                f"`python -m trainers.demo_model --out {DEMO_MODEL_DIR}`")
    return DEMO_MODEL_DIR



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


def backups_dir() -> Path:
    """Automatic backups of the database (workbench.database_file)."""
    return _sub("backups")


def search_cache_path() -> Path:
    """The search tool's persistent cache, shared by playground, eval and training."""
    return home() / "search_cache.db"
