"""Which process of a training launch this is: the one definition of rank and main process.

torchrun / `accelerate launch` / DeepSpeed give every process RANK and
WORLD_SIZE before any library starts; a plain process has neither and is
rank 0 of 1. Everything that decides "only one process writes" (the run row,
metrics, traces, checkpoints records, job notes) asks `is_main_process`, so
a launch whose trainer is not in distributed mode still writes once.
`gather` collects a picklable list from every rank (rank order), for the
values the main process must see from all of them.
"""

import os
from typing import Any


def process_rank() -> int:
    """This process's rank in the launch (0 for a plain process)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 of a launch (or a plain process): the one that writes to the store."""
    return process_rank() == 0


def gather(values: list[Any]) -> list[Any]:
    """Every rank's `values`, concatenated in rank order; a collective: every rank must call it.

    >>> gather([1, 2])  # a plain process: its own values
    [1, 2]
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(values))
    return [value for part in parts for value in part]
