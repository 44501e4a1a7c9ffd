"""Helpers of the fault tests (and bench_hardening): fill a disk, find runs left going with no live process
behind them, measure how far the host's shared memory grew while something ran."""

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from workbench.processes import is_running
from workbench.store import Store

T = TypeVar("T")


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


def host_shared_memory() -> int:
    """The host's shared memory in bytes (`Shmem:` of /proc/meminfo: memfd, System V and POSIX segments, tmpfs)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Shmem line in /proc/meminfo")


def shared_memory_growth(run: Callable[[], T]) -> tuple[T, int, int]:
    """Call `run`, sampling the host's shared memory every 5 ms meanwhile: (its result, baseline, peak growth)."""
    baseline = peak = host_shared_memory()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, host_shared_memory())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    return result, baseline, peak - baseline
