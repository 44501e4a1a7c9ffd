"""Several processes and threads sharing one search cache file and one corpus index."""

import json
import multiprocessing
import threading
import traceback
from pathlib import Path

from tools.search import SearchTool
from tools.search_cache import SearchCache

QUERIES = [f"topic{n} fact" for n in range(40)]


def _write_corpus(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": n, "title": f"Topic {n}", "text": f"topic{n} is a fact about {n}."})
                            + "\n" for n in range(60)), encoding="utf-8")
    return path


def _worker(corpus: str, cache_path: str, worker: int, start, results) -> None:
    """One process: searches every query (the two workers overlap fully) and writes raw rows too."""
    try:
        start.wait(timeout=30)
        tool = SearchTool("local", corpus=corpus, cache_path=cache_path, mode="cache-first")
        texts = {}
        for query in QUERIES[worker::2] + QUERIES[1 - worker::2]:
            response = tool.search(query)
            assert response.error is None, response.error
            texts[query] = response.text
        cache = SearchCache(cache_path)
        for n in range(100):
            cache.store("stress", f"q{worker}-{n}", 4, [{"title": "t", "snippet": str(n), "url": None, "score": None}])
            cache.record_call("stress", f"q{worker}-{n}", 4, "free", paid_backend=False)
        results.put((worker, "ok", texts))
    except BaseException:  # report any failure to the parent instead of dying silently
        results.put((worker, "failed", traceback.format_exc()))


def test_two_processes_share_the_cache_and_build_the_index_concurrently(tmp_path):
    corpus = _write_corpus(tmp_path / "corpus.jsonl")
    cache_path = tmp_path / "cache.db"
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_worker, args=(str(corpus), str(cache_path), n, start, results))
               for n in range(2)]
    for process in workers:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in workers)
    for process in workers:
        process.join(timeout=30)
    assert [status for _, status, _ in outcomes] == ["ok", "ok"], outcomes
    assert outcomes[0][2] == outcomes[1][2]  # both processes saw the same results for every query
    stats = SearchCache(cache_path).stats()
    assert stats["searches"] == 2 * len(QUERIES) + 200
    # Each query is paid (here: run) once or, when both processes miss at the same moment, twice.
    assert len(QUERIES) <= stats["by_backend"]["local"]["free"] <= 2 * len(QUERIES)
    assert stats["by_backend"]["local"]["free"] + stats["by_backend"]["local"]["hit"] == 2 * len(QUERIES)
    assert stats["stored_results"] == len(QUERIES) + 200


def test_threads_searching_different_queries_get_the_same_answers_as_one_thread(tmp_path):
    corpus = _write_corpus(tmp_path / "corpus.jsonl")
    serial = SearchTool("local", corpus=corpus, cache_path=tmp_path / "serial.db", mode="live")
    expected = {query: serial.search(query).text for query in QUERIES}
    shared = SearchTool("local", corpus=corpus, cache_path=tmp_path / "shared.db", mode="cache-first")
    seen: dict[str, str] = {}

    def run(offset: int) -> None:
        for query in QUERIES[offset::4] * 2:
            seen[query] = shared.search(query).text

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == expected
    stats = shared.stats()
    assert (stats["free_calls"], stats["cache_hits"], stats["errors"]) == (len(QUERIES), len(QUERIES), 0)
