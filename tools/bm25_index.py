"""The local search index file and its queries: precomputed BM25 impacts, memory-mapped, top-k by MaxScore.

Owns the file layout (one file: a JSON header padded to HEADER_BYTES, then
8-byte-aligned sections) and everything that reads it:
- `doc_store` + `doc_offsets`: each document's doc_id, title, text and url (`encode_document`);
- `terms` (newline-joined, in term-id order), `term_offsets` (CSR row pointers),
  `term_max` (each term's largest impact);
- `post_docs` / `post_impacts`: per term, the documents holding it (ascending)
  and that term's whole BM25 contribution to each of them (`Bm25Params.impact`).
Because a document's score is the sum of its terms' impacts, a query adds a
few precomputed arrays; nothing is tokenized or weighed at query time. The file
is mapped read-only and shared by every thread (and, through the page cache,
by every process). tools/bm25_build.py writes it.

Top-k is exact: terms are visited best bound first; once the k-th best score
so far reaches what the unvisited terms could still add (the sum of their
`term_max`), no unseen document can enter the top k, so the remaining terms are
only looked up for the surviving candidates (binary search in their postings)
-- MaxScore pruning, which skips the long postings of common words.
"""

import json
import math
import mmap
import os
import struct
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MAGIC = b"BM25IDX\x01"
_LENGTHS = struct.Struct("<4I")
_NO_URL = 0xFFFFFFFF
HEADER_BYTES = 16384  # JSON metadata; rewritten in place when only the source's mtime changes


@dataclass(frozen=True)
class Bm25Params:
    """The ranking: Lucene's BM25 (idf = ln(1 + (N - df + .5) / (df + .5)), never negative), titles counted twice."""

    k1: float = 1.2
    b: float = 0.75
    title_weight: int = 2  # a title word counts as this many body words (titles name what a page is about)

    def idf(self, doc_freq: np.ndarray, doc_count: int) -> np.ndarray:
        return np.log1p((doc_count - doc_freq + 0.5) / (doc_freq + 0.5))

    def impact(self, idf: np.ndarray, term_freq: np.ndarray, doc_length: np.ndarray, average_length: float):
        """One term's whole contribution to one document's score (title-weighted term frequency tf)."""
        norm = self.k1 * (1.0 - self.b + self.b * doc_length / average_length)
        return idf * term_freq * (self.k1 + 1.0) / (term_freq + norm)

    def as_dict(self) -> dict:
        return asdict(self)


def encode_document(document) -> bytes:
    """doc_id, title, text, url as UTF-8 fields behind their byte lengths (no url: length 2**32 - 1)."""
    fields = [document.doc_id.encode(), document.title.encode(), document.text.encode()]
    url = document.url.encode() if document.url is not None else None
    lengths = [len(field) for field in fields] + [len(url) if url is not None else _NO_URL]
    return _LENGTHS.pack(*lengths) + b"".join(fields) + (url or b"")


def decode_document(record: bytes) -> tuple[str, str, str, str | None]:
    *lengths, url_length = _LENGTHS.unpack_from(record)
    position, fields = _LENGTHS.size, []
    for length in lengths + [0 if url_length == _NO_URL else url_length]:
        fields.append(record[position:position + length].decode())
        position += length
    return fields[0], fields[1], fields[2], fields[3] if url_length != _NO_URL else None


class IndexFormatError(Exception):
    """The file is not an index of this format (or is truncated): rebuild it."""


class SearchDeadline(Exception):
    """The query passed its deadline."""


def read_header(path: Path) -> dict:
    """The metadata of an index file; IndexFormatError when the file is not one."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEADER_BYTES)
    except FileNotFoundError:
        raise IndexFormatError(f"no index at {path}") from None
    if len(head) < HEADER_BYTES or not head.startswith(MAGIC):
        raise IndexFormatError(f"{path} is not a search index of this format")
    size = int.from_bytes(head[len(MAGIC):len(MAGIC) + 4], "little")
    try:
        return json.loads(head[len(MAGIC) + 4:len(MAGIC) + 4 + size])
    except ValueError:
        raise IndexFormatError(f"{path} has a damaged header") from None


def encode_header(meta: dict) -> bytes:
    body = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
    if len(MAGIC) + 4 + len(body) > HEADER_BYTES:
        raise ValueError("index metadata does not fit the header")
    return (MAGIC + len(body).to_bytes(4, "little") + body).ljust(HEADER_BYTES, b"\0")


def rewrite_header(path: Path, changes: dict) -> None:
    """Update metadata fields of an existing index in place (one aligned write of the header)."""
    meta = read_header(path)
    meta.update(changes)
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(descriptor, encode_header(meta), 0)
    finally:
        os.close(descriptor)


class Bm25Index:
    """A read-only, memory-mapped index file; safe to query from many threads at once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = read_header(self.path)
        with self.path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        sections = {}
        for name, (offset, dtype, count) in self.meta["sections"].items():
            if offset + count * np.dtype(dtype).itemsize > len(self._map):
                raise IndexFormatError(f"{self.path} is truncated")
            sections[name] = np.frombuffer(self._map, dtype=dtype, count=count, offset=offset)
        self._doc_store = sections["doc_store"]
        self._doc_offsets = sections["doc_offsets"]
        self._term_offsets = sections["term_offsets"]
        self._term_max = sections["term_max"]
        self._post_docs = sections["post_docs"]
        self._post_impacts = sections["post_impacts"]
        self._terms_blob = sections["terms"]
        self.doc_count = int(self.meta["doc_count"])
        self._vocabulary: dict[str, int] | None = None
        self._vocabulary_lock = threading.Lock()
        self._scratch = threading.local()

    # -- terms and documents ---------------------------------------------------
    def term_ids(self, terms: list[str]) -> list[int | None]:
        """Term id of each term (None for a term no document has)."""
        vocabulary = self._vocabulary
        if vocabulary is None:
            with self._vocabulary_lock:
                if self._vocabulary is None:
                    names = self._terms_blob.tobytes().decode("utf-8").split("\n")
                    self._vocabulary = dict(zip(names, range(len(names))))
                vocabulary = self._vocabulary
        return [vocabulary.get(name) for name in terms]

    def document(self, number: int) -> tuple[str, str, str, str | None]:
        """(doc_id, title, text, url) of document `number` (0-based, index order)."""
        return decode_document(self._map[self._doc_offsets[number]:self._doc_offsets[number + 1]])

    def doc_freq(self, term_id: int) -> int:
        return int(self._term_offsets[term_id + 1] - self._term_offsets[term_id])

    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = self._term_offsets[term_id], self._term_offsets[term_id + 1]
        return self._post_docs[start:stop], self._post_impacts[start:stop]

    # -- ranking ---------------------------------------------------------------
    def top_k(self, weighted_terms: dict[int, float], k: int, *, postings_budget: float = math.inf,
              deadline: float = math.inf) -> list[tuple[int, float]]:
        """The k best (document, score) pairs, best first; exact BM25 sums of the terms' impacts.

        `weighted_terms` maps term id -> how many query words have that term.
        Up to `postings_budget` postings in all, every posting is added; past it,
        MaxScore pruning skips what cannot reach the top k (same result, less work).
        """
        if not weighted_terms or k <= 0:
            return []
        order = sorted(weighted_terms, key=lambda t: -weighted_terms[t] * float(self._term_max[t]))
        bounds = [weighted_terms[t] * float(self._term_max[t]) for t in order]
        still_possible = [sum(bounds[i:]) for i in range(len(order))]  # what terms i.. could still add
        prune = sum(self.doc_freq(t) for t in order) > postings_budget
        scores = self._scores()
        seen: list[np.ndarray] = []  # documents met so far, each once: the candidates
        touched: list[np.ndarray] = []  # other documents whose score was changed (to reset)
        refine_from = len(order)
        try:
            for position, term_id in enumerate(order):
                _check(deadline)
                if prune and position and _kth_best(scores, seen, k) >= still_possible[position]:
                    refine_from = position  # no document not seen yet can reach the top k any more
                    break
                docs, impacts = self.postings(term_id)
                seen.append(docs if position == 0 else docs[scores[docs] == 0.0])  # impacts are > 0
                scores[docs] += weighted_terms[term_id] * impacts
            candidates = np.concatenate(seen) if len(seen) != 1 else seen[0]
            for position in range(refine_from, len(order)):
                _check(deadline)
                threshold = _kth_best(scores, [candidates], k)
                candidates = candidates[scores[candidates] + still_possible[position] >= threshold]
                docs, impacts = self.postings(order[position])
                weight = weighted_terms[order[position]]
                if len(candidates) * 16 < len(docs):  # few survivors: look them up in the postings
                    candidates = np.sort(candidates)
                    where = np.minimum(np.searchsorted(docs, candidates), len(docs) - 1)
                    found = docs[where] == candidates
                    scores[candidates[found]] += weight * impacts[where[found]]
                else:  # many: adding the whole postings list is cheaper than searching it
                    scores[docs] += weight * impacts
                    touched.append(docs)
            return _best(candidates, scores[candidates], k)
        finally:
            for docs in seen + touched:
                scores[docs] = 0.0

    def _scores(self) -> np.ndarray:
        """This thread's score accumulator (all zeros between queries)."""
        scores = getattr(self._scratch, "scores", None)
        if scores is None:
            scores = self._scratch.scores = np.zeros(self.doc_count, dtype=np.float64)
        return scores


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise SearchDeadline


def _kth_best(scores: np.ndarray, seen: list[np.ndarray], k: int) -> float:
    """The k-th best score among the documents seen so far (-inf when fewer than k)."""
    count = sum(len(docs) for docs in seen)
    if count < k:
        return -math.inf
    values = scores[np.concatenate(seen)] if len(seen) > 1 else scores[seen[0]]
    return float(np.partition(values, count - k)[count - k])


def _best(candidates: np.ndarray, values: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Top k by score, ties broken by document order (so every path ranks alike)."""
    if len(candidates) > k:
        keep = np.argpartition(-values, k - 1)[:k]
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values))
    return [(int(candidates[i]), float(values[i])) for i in order]


def aligned(offset: int) -> int:
    return -(-offset // 8) * 8


def section_layout(sizes: dict[str, tuple[str, int]], start: int) -> dict[str, list]:
    """Sections laid out from `start`, each 8-byte aligned: name -> [offset, dtype, count]."""
    layout, offset = {}, aligned(start)
    for name, (dtype, count) in sizes.items():
        layout[name] = [offset, dtype, count]
        offset = aligned(offset + count * np.dtype(dtype).itemsize)
    return layout
