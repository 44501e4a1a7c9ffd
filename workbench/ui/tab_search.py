"""Search cache / costs tab: what was searched, how often the cache answered, paid calls made and saved.

Plain callbacks (`summary_markdown`, `backend_rows`, `recent_rows`,
`search_view`) turn a `workbench.search_service.SearchOverview` into what
the tab shows; `build` lays it out with a refresh button (the app also
refreshes it whenever the tab is opened).
"""

import time
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from tools.search_cache import OUTCOMES, CostMeter
from workbench.search_service import RECENT_LIMIT, SearchOverview, search_overview
from workbench.ui.context import UIContext

RECENT_HEADERS = ["when", "backend", "query", "k", "outcome", "latency (s)", "error"]
BACKEND_HEADERS = ["backend", *OUTCOMES, "total"]


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def summary_markdown(overview: SearchOverview) -> str:
    """The headline figures as a Markdown table."""
    meter = overview.meter
    rows = [("Searches logged", f"{meter.searches:,}"),
            ("Cache hit rate", f"{100 * meter.hit_rate:.1f} % ({meter.cache_hits:,} answered from the cache)"),
            ("Paid calls made", f"{meter.paid_calls:,}" + (f" · spent {_money(meter.spent_usd)}"
                                                             if meter.spent_usd is not None else "")),
            ("Paid calls saved by the cache", f"{meter.saved_calls:,}" + (f" · saved {_money(meter.saved_usd)}"
                                                                        if meter.saved_usd is not None else "")),
            ("Free calls (local corpus)", f"{meter.free_calls:,}"),
            ("Errors / offline misses", f"{meter.errors:,} / {meter.offline_misses:,}"),
            ("Stored result sets", f"{overview.stored_results:,}")]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    note = "" if overview.recent or meter.searches else "\n\n*Nothing has been searched yet.*"
    return f"| | |\n|---|---|\n{table}\n\nCache file: `{overview.path}`{note}"


def backend_rows(meter: CostMeter) -> list[list[Any]]:
    """Searches per backend and outcome."""
    return [[backend, *[counts.get(o, 0) for o in OUTCOMES], sum(counts.values())]
            for backend, counts in sorted(meter.by_backend.items())]


def recent_rows(recent: list[dict], now: float | None = None) -> list[list[Any]]:
    """The recent-queries table, newest first."""
    now = time.time() if now is None else now
    return [[_ago(now - row["at"]), row["backend"], row["query"], row["k"], row["outcome"],
             round(row["latency_s"] or 0.0, 3), row["error"] or ""] for row in recent]


def _ago(seconds: float) -> str:
    """
    >>> _ago(5), _ago(125), _ago(7300)
    ('5s ago', '2m ago', '2h ago')
    """
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s ago"
    return f"{seconds // 60}m ago" if seconds < 3600 else f"{seconds // 3600}h ago"


@dataclass
class SearchView:
    summary: str
    backends: list[list[Any]]
    recent: list[list[Any]]


def search_view(price: float | None, limit: float | None, cache_path: str | None = None) -> SearchView:
    """Everything the tab shows, read fresh from the cache file."""
    if price is not None and price < 0:
        raise ValueError("the price per paid search cannot be negative")
    overview = search_overview(cache_path, limit=int(limit or RECENT_LIMIT),
                               price_per_paid_call=float(price) if price else None)
    return SearchView(summary_markdown(overview), backend_rows(overview.meter), recent_rows(overview.recent))


@dataclass
class SearchTab:
    refresh_fn: Any
    refresh_inputs: list
    refresh_outputs: list


def build(ctx: UIContext) -> SearchTab:
    gr.Markdown("Every search the workbench runs (playground, eval, training) goes through one cache. "
                "A hit costs nothing; a miss on SerpApi is a paid call.")
    with gr.Row():
        price = gr.Number(0, label="Price per paid search (USD)", minimum=0, scale=2,
                          info="What your SerpApi plan charges per search; 0 or empty shows counts only.")
        limit = gr.Number(RECENT_LIMIT, label="Recent searches shown", precision=0, minimum=1, maximum=1000,
                          scale=1)
        refresh = gr.Button("Refresh", scale=1, elem_id="sc-refresh")
    summary = gr.Markdown(elem_id="sc-summary")
    backends = gr.Dataframe(headers=BACKEND_HEADERS, label="Searches per backend and outcome", interactive=False,
                            max_height=200)
    recent = gr.Dataframe(headers=RECENT_HEADERS, label="Recent searches (newest first)", interactive=False,
                          wrap=True, max_height=500, elem_id="sc-recent")

    def on_refresh(price_value, limit_value):
        try:
            view = search_view(price_value, limit_value)
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return (view.summary, pd.DataFrame(view.backends, columns=BACKEND_HEADERS),
                pd.DataFrame(view.recent, columns=RECENT_HEADERS))

    refresh.click(on_refresh, [price, limit], [summary, backends, recent], api_name="search_costs")
    price.submit(on_refresh, [price, limit], [summary, backends, recent], api_visibility="private")
    return SearchTab(on_refresh, [price, limit], [summary, backends, recent])
