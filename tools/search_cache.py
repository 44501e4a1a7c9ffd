"""The search tool's persistent cache and cost meter, one SQLite file shared by processes.

Owns two tables: `results` (the hits of a search, keyed by backend identity,
whitespace-normalised query and k) and `calls` (one row per search: answered
from the cache, paid backend call, free backend call, error, offline miss).
The cost meter is a plain function over counts of `calls` rows
(`meter_from_counts`), so the UI, eval and training read the same numbers.

Safe across processes and threads: WAL journal, a busy timeout, one connection
per thread, and every write is a single autocommitted statement.
"""

import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

BUSY_TIMEOUT_MS = 30_000
OUTCOMES = ("hit", "paid", "free", "error", "offline_miss")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    backend TEXT NOT NULL, query TEXT NOT NULL, k INTEGER NOT NULL,
    hits TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (backend, query, k)
);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, backend TEXT NOT NULL,
    paid_backend INTEGER NOT NULL, query TEXT NOT NULL, k INTEGER NOT NULL,
    outcome TEXT NOT NULL, latency_s REAL NOT NULL, error TEXT
);
"""


def normalise_query(query: str) -> str:
    """The cache's view of a query: runs of white space collapsed, ends stripped."""
    return " ".join(query.split())


@dataclass
class CostMeter:
    """What searching has cost and saved; `hit_rate` is the share of searches answered from the cache."""

    searches: int = 0
    paid_calls: int = 0
    saved_calls: int = 0
    free_calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    offline_misses: int = 0
    hit_rate: float = 0.0
    spent_usd: float | None = None
    saved_usd: float | None = None
    by_backend: dict[str, dict[str, int]] = field(default_factory=dict)


def meter_from_counts(counts: Iterable[Mapping], price_per_paid_call: float | None = None) -> CostMeter:
    """Counts of `calls` rows, as {backend, paid_backend, outcome, n} -> a CostMeter.

    A paid call is a successful call to a backend that charges per search; a
    saved call is a cache hit for such a backend (a call that was not paid).
    """
    meter = CostMeter()
    for row in counts:
        outcome, n, paid_backend = row["outcome"], int(row["n"]), bool(row["paid_backend"])
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown call outcome {outcome!r}")
        meter.searches += n
        per_backend = meter.by_backend.setdefault(row["backend"], dict.fromkeys(OUTCOMES, 0))
        per_backend[outcome] += n
        if outcome == "hit":
            meter.cache_hits += n
            meter.saved_calls += n if paid_backend else 0
        elif outcome == "paid":
            meter.paid_calls += n
        elif outcome == "free":
            meter.free_calls += n
        elif outcome == "error":
            meter.errors += n
        else:
            meter.offline_misses += n
    meter.hit_rate = meter.cache_hits / meter.searches if meter.searches else 0.0
    if price_per_paid_call is not None:
        meter.spent_usd = round(meter.paid_calls * price_per_paid_call, 6)
        meter.saved_usd = round(meter.saved_calls * price_per_paid_call, 6)
    return meter


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (persistent, so usually already done).

    Changing the journal mode does not wait on the busy timeout: when another
    process holds the file at that moment SQLite answers "locked" at once, so retry.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SearchCache:
    """Persistent search results and call log. `path=None` keeps them in a private temp file."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="search-cache-")
            path = Path(self._tempdir.name) / "search_cache.db"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def lookup(self, backend: str, query: str, k: int) -> list[dict] | None:
        """The stored hits for (backend, normalised query, k), or None on a miss."""
        row = self._connection().execute("SELECT hits FROM results WHERE backend = ? AND query = ? AND k = ?",
                                         (backend, normalise_query(query), k)).fetchone()
        return None if row is None else json.loads(row["hits"])

    def store(self, backend: str, query: str, k: int, hits: list[dict]) -> None:
        """Remember hits (replacing older ones for the same key)."""
        self._connection().execute(
            "INSERT INTO results(backend, query, k, hits, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(backend, query, k) DO UPDATE SET hits = excluded.hits, created_at = excluded.created_at",
            (backend, normalise_query(query), k, json.dumps(hits, ensure_ascii=False), time.time()))

    def record_call(self, backend: str, query: str, k: int, outcome: str, *, paid_backend: bool,
                    latency_s: float = 0.0, error: str | None = None) -> None:
        """Log one search for the cost meter and the recent-queries list."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        self._connection().execute(
            "INSERT INTO calls(at, backend, paid_backend, query, k, outcome, latency_s, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), backend, int(paid_backend), normalise_query(query), k, outcome, latency_s, error))

    def meter(self, price_per_paid_call: float | None = None) -> CostMeter:
        """The cost meter over every search logged in this cache file."""
        counts = self._connection().execute(
            "SELECT backend, paid_backend, outcome, COUNT(*) AS n FROM calls GROUP BY backend, paid_backend, outcome")
        return meter_from_counts(counts, price_per_paid_call)

    def stats(self, price_per_paid_call: float | None = None) -> dict:
        """The meter as a dict, plus how many results are stored and where."""
        conn = self._connection()
        stored = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return {**asdict(self.meter(price_per_paid_call)), "stored_results": stored, "path": str(self.path)}

    def recent(self, limit: int = 20) -> list[dict]:
        """The latest searches, newest first: at, backend, query, k, outcome, cached, latency_s, error."""
        rows = self._connection().execute(
            "SELECT at, backend, query, k, outcome, latency_s, error FROM calls ORDER BY id DESC LIMIT ?",
            (int(limit),))
        return [{**dict(row), "cached": row["outcome"] == "hit"} for row in rows]

    def clear(self) -> None:
        """Forget stored results and the call log."""
        conn = self._connection()
        conn.execute("DELETE FROM results")
        conn.execute("DELETE FROM calls")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
