"""Building the local search index file in bounded memory (the layout is tools/bm25_index.py's).

Owns one pass over the documents and one merge:
1. documents stream in; each is written to the document store at once and its
   words become term ids (a word is stemmed once, then remembered); every
   CHUNK_TOKENS tokens the chunk's (term, document, term frequency) triples
   are sorted by term with numpy and spilled to a temporary file;
2. with every document frequency and length known, the postings are merged
   term range by term range (at most BLOCK_POSTINGS at a time): read each
   chunk's slice of the range, order by term, turn frequencies into BM25
   impacts, write them at their final place.
Memory stays at one chunk or one block plus O(documents + distinct words),
whatever the corpus size; the index is written to the path the caller gives
(a temporary name it then renames into place).
"""

import tempfile
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.bm25_index import HEADER_BYTES, Bm25Params, encode_document, encode_header, section_layout
from tools.corpus_files import CorpusDocument
from tools.porter_stemmer import stem
from tools.search_terms import words

CHUNK_TOKENS = 200_000
BLOCK_POSTINGS = 200_000


class EmptyCorpus(Exception):
    """The documents yielded no document at all."""


@dataclass
class _Chunk:
    """One spilled chunk: its postings sorted by term, and where each of its terms starts."""

    offset: int  # byte offset of the chunk in the spill file
    count: int  # postings in the chunk
    terms: np.ndarray  # distinct term ids present, ascending
    starts: np.ndarray  # posting index where each of `terms` starts (+ a final `count`)


class _Vocabulary:
    """Word -> term id, stemming each distinct word once."""

    def __init__(self) -> None:
        self.term_ids: dict[str, int] = {}
        self._word_ids: dict[str, int] = {}

    def ids(self, found: list[str]) -> list[int]:
        ids = list(map(self._word_ids.get, found))  # one C-level pass; new words are rare after the first pages
        if None in ids:
            for position, term_id in enumerate(ids):
                if term_id is None:
                    word = found[position]
                    term_id = self._word_ids.get(word)
                    if term_id is None:
                        term_id = self._word_ids[word] = self.term_ids.setdefault(stem(word), len(self.term_ids))
                    ids[position] = term_id
        return ids


def build_index(documents: Iterable[CorpusDocument], path: Path, meta: dict,
                params: Bm25Params = Bm25Params()) -> dict:
    """Write the index of `documents` to `path`; returns its metadata (meta + counts + layout)."""
    path = Path(path)
    with path.open("wb") as out, tempfile.TemporaryFile(dir=path.parent) as spill:
        out.seek(HEADER_BYTES)
        vocabulary = _Vocabulary()
        doc_offsets, lengths, chunks = array("q", [HEADER_BYTES]), array("i"), []
        chunk_terms: list[int] = []
        chunk_tokens, chunk_first = array("i"), 0
        for document in documents:
            out.write(encode_document(document))
            doc_offsets.append(out.tell())
            title, body = words(document.title), words(document.text)
            chunk_terms += vocabulary.ids(title * params.title_weight + body)  # a title word counts twice
            chunk_tokens.append(len(title) * params.title_weight + len(body))
            lengths.append(len(title) + len(body))
            if len(chunk_terms) >= CHUNK_TOKENS:
                chunks.append(_spill(spill, chunk_terms, chunk_tokens, chunk_first))
                chunk_first += len(chunk_tokens)
                chunk_terms, chunk_tokens = [], array("i")
        if chunk_tokens:
            chunks.append(_spill(spill, chunk_terms, chunk_tokens, chunk_first))
        doc_count = len(lengths)
        if not doc_count:
            raise EmptyCorpus
        term_count = len(vocabulary.term_ids)
        doc_freq = np.zeros(term_count, dtype=np.int64)
        for chunk in chunks:
            doc_freq[chunk.terms] += np.diff(chunk.starts)
        term_offsets = np.concatenate([[0], np.cumsum(doc_freq)]).astype(np.int64)
        terms_blob = "\n".join(vocabulary.term_ids).encode("utf-8")
        del vocabulary
        layout = {"doc_store": [HEADER_BYTES, "u1", doc_offsets[-1] - HEADER_BYTES]}
        layout.update(section_layout({
            "doc_offsets": ("<i8", doc_count + 1), "terms": ("u1", len(terms_blob)),
            "term_offsets": ("<i8", term_count + 1), "term_max": ("<f4", term_count),
            "post_docs": ("<i4", int(term_offsets[-1])), "post_impacts": ("<f4", int(term_offsets[-1])),
        }, start=doc_offsets[-1]))
        for name, data in (("doc_offsets", np.frombuffer(doc_offsets, dtype=np.int64)),
                           ("terms", np.frombuffer(terms_blob, dtype=np.uint8)), ("term_offsets", term_offsets)):
            out.seek(layout[name][0])
            out.write(data.astype(layout[name][1]).tobytes())
        doc_lengths = np.frombuffer(lengths, dtype=np.int32)
        total_tokens = int(doc_lengths.sum())
        idf = params.idf(doc_freq, doc_count)
        term_max = _merge(out, spill, chunks, layout, term_offsets, idf, doc_lengths,
                          total_tokens / doc_count, params)
        out.seek(layout["term_max"][0])
        out.write(term_max.astype("<f4").tobytes())
        meta = {**meta, "doc_count": doc_count, "total_tokens": total_tokens, "term_count": term_count,
                "postings": int(term_offsets[-1]), "ranking": params.as_dict(), "sections": layout}
        out.seek(0)
        out.write(encode_header(meta))
    return meta


def _spill(spill, chunk_terms: list[int], chunk_tokens: array, first_doc: int) -> _Chunk:
    """Count (term, document) pairs of a chunk, sort them by term, append them to the spill file."""
    terms = np.array(chunk_terms, dtype=np.int64)
    docs = np.repeat(np.arange(first_doc, first_doc + len(chunk_tokens), dtype=np.int64),
                     np.frombuffer(chunk_tokens, dtype=np.int32))
    keys, freqs = np.unique((terms << 32) | docs, return_counts=True)  # sorted by term, then document
    del terms, docs
    posting_terms = (keys >> 32).astype(np.int32)
    present, starts = np.unique(posting_terms, return_index=True)
    offset = spill.seek(0, 2)
    spill.write(posting_terms.tobytes())
    spill.write((keys & 0xFFFFFFFF).astype(np.int32).tobytes())
    spill.write(freqs.astype(np.float32).tobytes())
    return _Chunk(offset, len(keys), present, np.append(starts, len(keys)).astype(np.int64))


def _read(spill, chunk: _Chunk, column: int, start: int, stop: int, dtype: str) -> np.ndarray:
    """Postings start:stop of one column (0 terms, 1 documents, 2 frequencies) of a spilled chunk."""
    spill.seek(chunk.offset + 4 * (column * chunk.count + start))
    return np.fromfile(spill, dtype=dtype, count=stop - start)


def _merge(out, spill, chunks: list[_Chunk], layout: dict, term_offsets: np.ndarray, idf: np.ndarray,
           doc_lengths: np.ndarray, average_length: float, params: Bm25Params) -> np.ndarray:
    """Write every term's postings (documents ascending, BM25 impacts) in term-range blocks; returns term_max."""
    term_count = len(term_offsets) - 1
    term_max = np.zeros(term_count, dtype=np.float32)
    first = 0
    while first < term_count:
        # the largest term range whose postings fit a block (always at least one term)
        last = max(first + 1, int(np.searchsorted(term_offsets, term_offsets[first] + BLOCK_POSTINGS, "right")) - 1)
        last = min(last, term_count)
        parts = []
        for chunk in chunks:
            low, high = np.searchsorted(chunk.terms, [first, last])
            start, stop = int(chunk.starts[low]), int(chunk.starts[high])
            if stop > start:
                parts.append([_read(spill, chunk, column, start, stop, dtype)
                              for column, dtype in enumerate(("<i4", "<i4", "<f4"))])
        terms, docs, freqs = (np.concatenate([part[column] for part in parts]) for column in range(3))
        order = np.argsort(terms, kind="stable")  # chunks are in document order: documents stay ascending
        terms, docs, freqs = terms[order], docs[order], freqs[order]
        impacts = params.impact(idf[terms], freqs, doc_lengths[docs], average_length).astype(np.float32)
        block_start = int(term_offsets[first])
        for name, values in (("post_docs", docs), ("post_impacts", impacts)):
            out.seek(layout[name][0] + 4 * block_start)
            out.write(values.astype(layout[name][1]).tobytes())
        group_starts = (term_offsets[first:last] - block_start).astype(np.int64)
        term_max[first:last] = np.maximum.reduceat(impacts, group_starts)
        first = last
    return term_max
