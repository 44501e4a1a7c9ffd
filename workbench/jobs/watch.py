"""One viewer's view of the job rows: `JobWatch` keeps them current by reading only what changed.

Plain Python for the UI's job panels (Train, Eval): each poll starts queued
jobs and settles dead ones (`workbench.jobs.tick`), then reads the rows
changed since the previous poll, so a poll costs one indexed query.
"""

import time
from dataclasses import dataclass, field

from workbench import jobs
from workbench.store import Store


@dataclass
class JobWatch:
    """A viewer's copy of the job rows of some kinds; `poll` reads only rows changed since the last one."""

    kinds: tuple[str, ...]
    rows: dict[str, dict] = field(default_factory=dict)
    seen_until: float | None = None  # newest updated_at read so far; None before the first poll

    def poll(self, store: Store, limit: int = 200) -> list[dict]:
        """Start queued jobs / reconcile dead ones, then read changed rows; returns the changed rows."""
        jobs.tick(store)
        if self.seen_until is None:
            changed = store.list_jobs(limit=limit)  # first poll (or a page reload): re-attach to every job
            self.seen_until = 0.0
        else:
            changed = store.jobs_changed_since(self.seen_until)
        mine = [row for row in changed if row["kind"] in self.kinds]
        for row in changed:
            self.seen_until = max(self.seen_until, row["updated_at"] or 0.0)
        for row in mine:
            self.rows[row["id"]] = row
        return mine

    def listed(self, limit: int = 50) -> list[dict]:
        """Newest first."""
        return sorted(self.rows.values(), key=lambda row: -(row["created_at"] or 0.0))[:limit]

    def get(self, job_id: str | None) -> dict | None:
        return self.rows.get(job_id) if job_id else None


def job_age(row: dict, now: float | None = None) -> str:
    """How long ago a job was created, briefly.

    >>> job_age({"created_at": 100.0}, now=145.0), job_age({"created_at": 0.0}, now=7300.0)
    ('45s ago', '2h 1m ago')
    """
    seconds = int((now or time.time()) - (row["created_at"] or 0.0))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
