"""Helpers of the fault tests: fill a disk, find runs left going with no live process behind them."""

import os
from pathlib import Path

from workbench.processes import is_running
from workbench.store import Store


def fill_disk(folder: Path) -> Path:
    """Fill the file system holding `folder` to the last byte with one file; returns it (delete it to free)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def orphaned_runs(store: Store) -> list[str]:
    """Runs that say queued/running although their process is gone and no queued or running job owns them."""
    owned = {job["run_id"] for status in ("queued", "running") for job in store.list_jobs(status=status)}
    return [run["id"] for run in store.unfinished_runs()
            if run["id"] not in owned and not is_running(run["owner_pid"], run["owner_start"])]
