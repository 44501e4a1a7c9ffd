"""The local search index: terms and stems, the bounded-memory build, BM25 scores and exact MaxScore top-k."""

import json
import math
import random
import re
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tools import bm25_build
from tools.bm25_build import build_index
from tools.bm25_index import Bm25Index, Bm25Params
from tools.corpus_files import CorpusDocument, read_documents
from tools.porter_stemmer import stem
from tools.search_terms import fold, term, words

ROOT = Path(__file__).resolve().parent.parent
TRICKY_WORDS = ["caresses", "ponies", "ties", "caress", "cats", "feed", "agreed", "plastered", "bled", "motoring",
                "sing", "conflated", "troubled", "sized", "hopping", "tanned", "falling", "hissing", "fizzed",
                "failing", "filing", "happy", "sky", "relational", "conditional", "rational", "valenci",
                "hesitanci", "digitizer", "conformabli", "radicalli", "differentli", "vileli", "analogousli",
                "vietnamization", "predication", "operator", "feudalism", "decisiveness", "hopefulness",
                "callousness", "formaliti", "sensitiviti", "sensibiliti", "triplicate", "formative", "formalize",
                "electriciti", "electrical", "hopeful", "goodness", "revival", "allowance", "inference", "airliner",
                "gyroscopic", "adjustable", "defensible", "irritant", "replacement", "adjustment", "dependent",
                "adoption", "homologou", "communism", "activate", "angulariti", "homologous", "effective",
                "bowdlerize", "probate", "rate", "cease", "controll", "roll", "eed", "ies", "sses", "yes", "syzygy",
                "2000s", "x86", "abc123ing", "toying", "enjoyed", "y", "ay", "by", "eye", "yyyy"]


def english_words() -> list[str]:
    """Every word of the project's own prose (README and docstrings): a few thousand real English words."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "workbench").rglob("*.py")) + sorted((ROOT / "tools").glob("*.py")):
        text += path.read_text(encoding="utf-8")
    return sorted(set(re.findall(r"[a-z0-9]+", text.lower())) | set(TRICKY_WORDS))


def test_porter_stems_exactly_as_fts5s_porter_tokenizer():
    """The earlier index stemmed with SQLite's FTS5 porter tokenizer: the same words meet the same terms."""
    vocabulary = english_words()
    assert len(vocabulary) > 3000
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    conn.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", enumerate(vocabulary))
    fts5 = {vocabulary[row]: stemmed for row, stemmed in conn.execute("SELECT doc, term FROM v")}
    assert {word: stem(word) for word in vocabulary} == fts5


def test_words_fold_case_and_diacritics_and_keep_other_scripts():
    assert words("Café CULTURE, naïve façades; 東京 は 2024!") == ["cafe", "culture", "naive", "facades", "東京",
                                                                   "は", "2024"]
    assert fold("ÅNGSTRÖM") == "angstrom"
    assert term("Cafés") == term("cafe") == "cafe" and term("connections") == term("connected") == "connect"


def _zipf_corpus(count: int, seed: int = 5) -> list[CorpusDocument]:
    rng = random.Random(seed)
    vocabulary = [f"w{n}" for n in range(400)]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    return [CorpusDocument(str(n), " ".join(rng.choices(vocabulary, weights, k=2)),
                           " ".join(rng.choices(vocabulary, weights, k=rng.randint(3, 40))))
            for n in range(count)]


def test_a_build_spilled_in_many_chunks_and_blocks_equals_a_build_in_one(tmp_path, monkeypatch):
    documents = _zipf_corpus(600)
    one = build_index(documents, tmp_path / "one.idx", {})
    monkeypatch.setattr(bm25_build, "CHUNK_TOKENS", 97)  # ~30 spilled chunks
    monkeypatch.setattr(bm25_build, "BLOCK_POSTINGS", 50)  # merged in many term ranges
    many = build_index(documents, tmp_path / "many.idx", {})
    assert one == many
    assert (tmp_path / "one.idx").read_bytes() == (tmp_path / "many.idx").read_bytes()


def reference_bm25(documents: list[CorpusDocument], query: list[str], params: Bm25Params) -> dict[str, float]:
    """BM25 written out plainly, document by document: the definition the index must match."""
    counted = [Counter(words(d.title) * params.title_weight + words(d.text)) for d in documents]
    lengths = [len(words(d.title)) + len(words(d.text)) for d in documents]
    stemmed = [Counter({term(w): c for w, c in counts.items()}) for counts in counted]
    for counts, original in zip(stemmed, counted):
        counts.clear()
        for word, count in original.items():
            counts[term(word)] += count
    average = sum(lengths) / len(documents)
    scores = {}
    for document, counts, length in zip(documents, stemmed, lengths):
        total = 0.0
        for query_term in (term(w) for w in query):
            freq = sum(1 for c in stemmed if query_term in c)
            tf = counts.get(query_term, 0)
            if tf:
                idf = math.log(1 + (len(documents) - freq + 0.5) / (freq + 0.5))
                total += idf * tf * (params.k1 + 1) / (tf + params.k1 * (1 - params.b + params.b * length / average))
        if total:
            scores[document.doc_id] = total
    return scores


def test_scores_are_bm25_with_titles_counted_twice(tmp_path):
    documents = _zipf_corpus(120)
    build_index(documents, tmp_path / "i.idx", {})
    index = Bm25Index(tmp_path / "i.idx")
    for query in (["w3"], ["w17", "w3"], ["w250", "w1", "w60"], ["w399", "w398"]):
        expected = reference_bm25(documents, query, Bm25Params())
        weights = Counter(t for t in index.term_ids([term(w) for w in query]) if t is not None)
        got = {index.document(number)[0]: score for number, score in index.top_k(weights, 1000)}
        assert got.keys() == expected.keys()
        assert all(got[key] == pytest.approx(value, rel=1e-6) for key, value in expected.items())


def test_maxscore_top_k_equals_exhaustive_top_k(tmp_path, monkeypatch):
    documents = _zipf_corpus(3000, seed=9)
    build_index(documents, tmp_path / "i.idx", {})
    index = Bm25Index(tmp_path / "i.idx")
    lookups = []  # candidates looked up in a long postings list instead of adding the whole list
    searchsorted = np.searchsorted
    monkeypatch.setattr(np, "searchsorted", lambda *a, **kw: lookups.append(1) or searchsorted(*a, **kw))
    rng = random.Random(1)
    vocabulary = [f"w{n}" for n in range(400)]
    for _ in range(300):
        query = rng.choices(vocabulary, [1 / (rank + 1) for rank in range(400)], k=rng.randint(1, 5))
        weights = Counter(t for t in index.term_ids([term(w) for w in query]) if t is not None)
        for k in (1, 4, 20):
            exhaustive = index.top_k(weights, k)
            pruned = index.top_k(weights, k, postings_budget=0)
            assert [score for _, score in pruned] == [score for _, score in exhaustive]
            cut = exhaustive[-1][1]  # documents tied at the cut may differ
            assert {d for d, s in pruned if s != cut} == {d for d, s in exhaustive if s != cut}
    assert len(lookups) > 100, "the pruned path was hardly taken"
    assert index.top_k({}, 4) == [] and index.top_k(weights, 0) == []


def test_the_index_keeps_every_document_as_read(tmp_path):
    source = tmp_path / "c.jsonl"
    records = [{"id": "a", "title": "Ünïcode", "text": "line one\nline two", "url": "https://x.org/a"},
               {"id": "b", "text": "no title, no url"}]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    build_index(read_documents(source), tmp_path / "i.idx", {"note": "kept"})
    index = Bm25Index(tmp_path / "i.idx")
    assert [index.document(n) for n in range(2)] == [("a", "Ünïcode", "line one\nline two", "https://x.org/a"),
                                                      ("b", "", "no title, no url", None)]
    assert index.meta["note"] == "kept" and index.doc_count == 2
