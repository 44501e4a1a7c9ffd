"""What searching has cost, for the UI (no Gradio): the shared search cache's meter and recent queries.

Reads the cache file every search in the workbench writes to
(settings.search_cache_path(): playground, eval and training share it)
through tools.search_cache.SearchCache. A workbench that never searched has
no cache file yet; `search_overview` then reports zeros and does not create one.
"""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tools.search_cache import CostMeter, SearchCache
from workbench import settings

RECENT_LIMIT = 50


def fields_of(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


@dataclass
class SearchOverview:
    """The cost meter, the number of stored results and the latest searches (newest first)."""

    meter: CostMeter
    stored_results: int
    recent: list[dict] = field(default_factory=list)
    path: str = ""

    def to_dict(self) -> dict:
        return {**asdict(self.meter), "stored_results": self.stored_results, "path": self.path,
                "recent": self.recent}


def search_overview(cache_path: str | Path | None = None, *, limit: int = RECENT_LIMIT,
                    price_per_paid_call: float | None = None) -> SearchOverview:
    """The meter and the `limit` latest searches of the cache at `cache_path` (default: the shared one)."""
    path = Path(cache_path) if cache_path else settings.search_cache_path()
    if not path.is_file():
        meter = CostMeter()
        if price_per_paid_call is not None:
            meter.spent_usd = meter.saved_usd = 0.0
        return SearchOverview(meter, 0, [], str(path))
    cache = SearchCache(path)
    try:
        stats = cache.stats(price_per_paid_call)
        meter = CostMeter(**{name: stats[name] for name in fields_of(CostMeter)})
        return SearchOverview(meter, stats["stored_results"], cache.recent(max(1, int(limit))), str(path))
    finally:
        cache.close()
