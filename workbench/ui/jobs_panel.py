"""The job list panel the Train and Eval tabs share: a table of jobs, the selected job, cancel, and the poll.

Plain callbacks (`jobs_table`, `progress_html`, `poll_jobs`, `cancel_job`)
are tested without a browser; `wire` connects one tab's panel controls the
same way in both tabs (refresh, pick a row, cancel, the poll timer).
Jobs are database rows (workbench.jobs), so a reloaded page re-attaches.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from workbench import jobs
from workbench.jobs.watch import JobWatch
from workbench.store import Store
from workbench.ui import render

LOG_LINES = 150
JOB_HEADERS = ["status", "progress", "kind", "run", "created", "now / error", "job id"]
STATUS_COLOURS = {"queued": "#64748b", "running": "#2563eb", "succeeded": "#15803d", "failed": "#b91c1c",
                  "cancelled": "#b45309"}


def clock(timestamp: float | None) -> str:
    """A creation time as the table shows it: a clock time, which stays true between redraws (an age would not)."""
    return time.strftime("%H:%M:%S", time.localtime(timestamp)) if timestamp else ""


def jobs_table(rows: list[dict]) -> pd.DataFrame:
    data = [[row["status"], f"{100 * (row['progress'] or 0.0):.0f} %", row["kind"], row["run_id"] or "",
             clock(row["created_at"]), render.clip(row["error"] or running_note(row, ""), 80), row["id"]]
            for row in rows]
    return pd.DataFrame(data, columns=JOB_HEADERS)


def progress_html(job: dict | None, fraction: float | None = None, note: str = "") -> str:
    """A progress bar coloured by the job's status, with `note` beside it; `fraction` overrides the job row's
    progress."""
    if job is None:
        return '<p class="wb-muted">Pick a job from the list.</p>'
    share = (job["progress"] or 0.0) if fraction is None else fraction
    share = max(0.0, min(1.0, share))
    colour = STATUS_COLOURS.get(job["status"], "#475569")
    label = f"{job['status']} · {100 * share:.0f} %" + (f" · {render.esc(note)}" if note else "")
    return (f'<div class="wb-progress" style="border:1px solid #cbd5e1;border-radius:6px;height:22px;'
            f'position:relative;background:#f1f5f9"><div style="width:{100 * share:.1f}%;height:100%;'
            f'background:{colour};border-radius:6px;opacity:0.8"></div><span style="position:absolute;left:8px;'
            f'top:1px;font-size:0.85em">{label}</span></div>')


def running_note(job: dict, fallback: str) -> str:
    """What a running job says it is doing (the job row's note), else `fallback`."""
    return (job.get("note") if job["status"] == "running" else None) or fallback


def running_job(rows: list[dict]) -> str | None:
    """The newest running job of `rows` (newest first): what a reloaded page re-attaches to."""
    return next((row["id"] for row in rows if row["status"] == "running"), None)


def poll_jobs(store: Store, watch: JobWatch, job_value: str | None, force: bool) -> tuple[Any, str | None, Any]:
    """Poll the watch; returns (job table or skip, job to show, job-id box update or skip).

    On the first poll of a page with no job chosen, the newest running job is chosen.
    """
    first = watch.seen_until is None
    changed = watch.poll(store)
    listing = jobs_table(watch.listed()) if first or changed or force else gr.skip()
    chosen = (job_value or "").strip() or (running_job(watch.listed()) if first else None)
    return listing, chosen, chosen if chosen and chosen != job_value else gr.skip()


def tail_lines(text: str, lines: int = LOG_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def cancel_job(store: Store, job_id: str, kind: str | None = None) -> str:
    """Cancel a queued or running job (of `kind`, when given); ValueError says what to pick instead."""
    job = store.get_job(job_id or "")
    if job is None or (kind is not None and job["kind"] != kind):
        raise ValueError(f"pick {'an ' + kind if kind else 'a'} job to cancel")
    if job["status"] not in ("queued", "running"):
        raise ValueError(f"job {job_id} already ended ({job['status']})")
    jobs.cancel(store, job_id)
    return f"Cancelled {kind + ' ' if kind else ''}job {job_id}."


def selected_job_id(event: gr.SelectData):
    """The job id of a clicked job-list row (its last column); shared with the Eval tab."""
    row = event.row_value or []
    return row[-1] if row else gr.skip()


def cancel_job_callback(store: Store, job_value: str, kind: str | None = None) -> str:
    """`cancel_job` for a Cancel button: what to pick instead shows as an error toast."""
    try:
        return cancel_job(store, job_value, kind=kind)
    except ValueError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


@dataclass
class JobPanel:
    """The controls of one tab's job panel."""

    table: gr.Dataframe
    job_id: gr.Textbox
    cancel: gr.Button
    refresh: gr.Button
    timer: gr.Timer
    state: gr.State
    message: gr.Markdown


def wire(panel: JobPanel, refresh_fn: Callable, tick_fn: Callable, cancel_fn: Callable, outputs: list[Any], *,
         api_kind: str) -> None:
    """Connect a panel: refresh, Enter in the job box and a clicked row show that job; Cancel; the poll timer."""
    inputs = [panel.job_id, panel.state]
    panel.refresh.click(refresh_fn, inputs, outputs, api_name=f"show_{api_kind}_jobs")
    panel.job_id.submit(refresh_fn, inputs, outputs, api_visibility="private")
    panel.table.select(selected_job_id, None, panel.job_id, api_visibility="private").then(
        refresh_fn, inputs, outputs, api_visibility="private")
    panel.cancel.click(cancel_fn, panel.job_id, panel.message, api_name=f"cancel_{api_kind}_job").then(
        refresh_fn, inputs, outputs, api_visibility="private")
    panel.timer.tick(tick_fn, inputs, outputs, api_visibility="private", concurrency_limit=4, concurrency_id="poll")
