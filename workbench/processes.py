"""Which process is which: a PID recorded together with its kernel start time, so a reused PID never passes.

Jobs record their supervisor this way (`workbench.jobs`) and runs record the
process that runs them (`workbench.store`), so whoever finds a row saying
"running" can tell whether its process is really still there. A workbench
process that stops on a full disk exits with EXIT_DISK_FULL, so its
supervisor can say why even when nothing could be written.
"""

import os
from pathlib import Path

EXIT_DISK_FULL = 75  # EX_TEMPFAIL: a workbench process stopped because the disk was full


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def current_process() -> tuple[int, str | None]:
    """This process as (pid, start time)."""
    return os.getpid(), process_start_time(os.getpid())


def is_running(pid: int | None, started: str | None) -> bool:
    """Whether the process recorded as (pid, start time) is still alive (not a zombie, not a reused PID)."""
    return bool(pid) and started is not None and process_start_time(pid) == started
