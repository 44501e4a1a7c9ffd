"""Benchmark: local search over 100,000 generated short documents.

Generates a deterministic corpus (Zipf-distributed made-up words plus English
function words, so some words occur in most documents), builds the FTS5 index,
then times queries three ways in the same run:
  - LocalCorpus.search (BM25, the backend itself),
  - SearchTool.search in live mode (backend + cache write + call log + formatting),
  - exact FTS5 BM25 without pruning very common words (what the pruning buys),
  - a naive baseline: a Python loop scoring every document by substring counts.
Each query is made of words from one target document; "target@k" is how often
that document comes back in the top k (a sanity check that ranking works).

Target: LocalCorpus.search p50 <= 20 ms, and SearchTool live p50 <= 20 ms.
Exit status 1 when a target is missed.

    python bench/bench_search.py [--docs 100000] [--queries 300]
"""

import argparse
import heapq
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.local_corpus import LocalCorpus
from tools.search import SearchTool

TARGET_P50_MS = 20.0
K = 4
SYLLABLES = "ka lo mi ren ta vo shi bel dor an ex qui zu pra nel tor gi fa um ost".split()
FUNCTION_WORDS = "the of and a in to is was for on as by with from at that".split()


def make_vocabulary(rng: random.Random, size: int = 30_000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def generate_corpus(path: Path, docs: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng)
    zipf = itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocabulary)))  # exponent 1
    cumulative = list(zipf)
    records = []
    with path.open("w", encoding="utf-8") as handle:
        for number in range(docs):
            words = rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(20, 50))
            text = " ".join(word if rng.random() > 0.3 else f"{word} {rng.choice(FUNCTION_WORDS)}" for word in words)
            title = " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=2)).title()
            record = {"id": str(number), "title": title, "text": text}
            records.append(record)
            handle.write(json.dumps(record) + "\n")
    return records


def make_queries(records: list[dict], count: int, seed: int = 11) -> list[tuple[str, str]]:
    """(query, target doc id): 3-4 words of one document wrapped in a question."""
    rng = random.Random(seed)
    queries = []
    for _ in range(count):
        record = rng.choice(records)
        words = [word for word in record["text"].split() if word not in FUNCTION_WORDS]
        picked = rng.sample(words, min(len(words), rng.randint(3, 4)))
        queries.append((f"what is the {' '.join(picked[:-1])} of {picked[-1]}?", record["id"]))
    return queries


def naive_search(records: list[dict], lowered: list[str], query: str, k: int) -> list[str]:
    """The baseline: score every document by how often it contains the query words (substring count)."""
    terms = [word for word in query.lower().strip("?").split() if word not in FUNCTION_WORDS]
    padded = [f" {term} " for term in terms]
    scored = ((sum(text.count(term) for term in padded), index) for index, text in enumerate(lowered))
    return [records[index]["id"] for score, index in heapq.nlargest(k, scored) if score > 0]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(function, queries) -> tuple[list[float], int]:
    latencies, found = [], 0
    for query, target in queries:
        started = time.perf_counter()
        ids = function(query)
        latencies.append((time.perf_counter() - started) * 1000)
        found += target in ids
    return latencies, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--baseline-queries", type=int, default=20)
    parser.add_argument("--exact-queries", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        corpus_path = Path(folder) / "corpus.jsonl"
        started = time.perf_counter()
        records = generate_corpus(corpus_path, args.docs)
        generate_s = time.perf_counter() - started
        queries = make_queries(records, args.queries)

        corpus = LocalCorpus(corpus_path)
        started = time.perf_counter()
        corpus.ensure_index(force_check=True)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        LocalCorpus(corpus_path).ensure_index(force_check=True)  # a second process finds the index fresh
        reopen_ms = (time.perf_counter() - started) * 1000

        corpus.search(queries[0][0], K)  # warm the connection
        bm25_ms, bm25_found = timed(lambda query: [hit.doc_id for hit in corpus.search(query, K)], queries)

        tool = SearchTool("local", corpus=corpus_path, cache_path=Path(folder) / "cache.db", mode="live", k=K)
        tool.search(queries[0][0])
        tool_ms, _ = timed(lambda query: tool.search(query).text, queries)
        cached_tool = SearchTool("local", corpus=corpus_path, cache_path=Path(folder) / "cache.db",
                                 mode="cache-first", k=K)
        hit_ms, _ = timed(lambda query: cached_tool.search(query).text, queries)

        exact = LocalCorpus(corpus_path, postings_budget=10**12)  # no pruning of common words
        exact_queries = queries[:args.exact_queries]
        exact_ms, exact_found = timed(lambda query: [hit.doc_id for hit in exact.search(query, K)], exact_queries)
        agree = sum([hit.doc_id for hit in corpus.search(query, K)] == [hit.doc_id for hit in exact.search(query, K)]
                    for query, _ in exact_queries)

        lowered = [f" {record['title']} {record['text']} ".lower() for record in records]
        baseline_queries = queries[:args.baseline_queries]
        naive_ms, naive_found = timed(lambda query: naive_search(records, lowered, query, K), baseline_queries)

    rows = [
        ("LocalCorpus.search (FTS5 BM25)", bm25_ms, f"{bm25_found}/{len(queries)}"),
        ("SearchTool.search, live", tool_ms, ""),
        ("SearchTool.search, cache hit", hit_ms, ""),
        ("FTS5 exact BM25, no pruning", exact_ms, f"{exact_found}/{len(exact_queries)}"),
        ("naive Python substring scan", naive_ms, f"{naive_found}/{len(baseline_queries)}"),
    ]
    naive_p50 = statistics.median(naive_ms)
    print(f"corpus: {args.docs:,} docs generated in {generate_s:.1f} s; index built in {build_s:.2f} s; "
          f"fresh-index check on reopen {reopen_ms:.1f} ms")
    print(f"{'method':34} {'p50 ms':>9} {'p95 ms':>9} {'naive/this':>11} {'target@4':>10}")
    for name, latencies, found in rows:
        p50 = statistics.median(latencies)
        print(f"{name:34} {p50:9.2f} {percentile(latencies, 0.95):9.2f} {naive_p50 / p50:10.1f}x {found:>10}")
    print(f"pruned BM25 returns the same top {K} as exact BM25 for {agree}/{len(exact_queries)} queries")
    misses = [name for name, latencies, _ in rows[:2] if statistics.median(latencies) > TARGET_P50_MS]
    for name in misses:
        print(f"TARGET MISSED: {name} p50 > {TARGET_P50_MS} ms")
    print("target p50 <= 20 ms:", "missed" if misses else "met")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
