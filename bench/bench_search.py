"""Benchmark: local search over 100,000 generated short documents, against bm25s in the same run.

Generates a deterministic corpus (Zipf-distributed made-up words plus English
function words, so some words occur in most documents), then:
- builds the workbench index (LocalCorpus) and a bm25s index (bm25s +
  PyStemmer, the way its README builds one: tokenize with English stop words
  and stemmer, then index), each in a child process so its time and peak
  memory are its own;
- times queries both ways, interleaved query by query so machine load hits
  both alike: LocalCorpus.search (query text -> top 4 documents with
  snippets) and bm25s (tokenize the query, retrieve the top 4, look the
  documents up in the in-memory corpus);
- checks retrieval: how often each finds the document the query was drawn
  from (target@1, @4), how often our first hit is exhaustive BM25's (same
  ranking without MaxScore pruning) and bm25s's;
- times SearchTool (cache write, call log, formatting on top; and a cache hit)
  and, as the in-project baseline, a naive Python scan scoring every document.
Targets: p50 and p95 <= 1.0x bm25s; same first hit as exhaustive BM25 on
>= 95 % of queries; SearchTool live p50 <= 20 ms. Needs bench/requirements.txt.

    python bench/bench_search.py [--quick] [--json] [--docs 100000] [--queries 300]
"""

import argparse
import heapq
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Figure, finish, ratio  # noqa: E402
from tools.local_corpus import LocalCorpus  # noqa: E402
from tools.search import SearchTool  # noqa: E402

K = 4
TARGET_TOOL_P50_MS = 20.0
TARGET_SAME_FIRST_HIT = 0.95
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


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MB. Not getrusage's ru_maxrss: that survives exec, so a
    child would report the RSS its parent had when it forked."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def child_build(engine: str, corpus: Path, out: Path) -> None:
    """Build one engine's index in this (child) process; print seconds, peak and added memory as JSON."""
    if engine == "bm25s":
        import bm25s
        import Stemmer
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    if engine == "ours":
        LocalCorpus(corpus).ensure_index(force_check=True)  # at its default place, where SearchTool looks
    else:
        with corpus.open(encoding="utf-8") as handle:
            texts = [f"{record['title']} {record['text']}" for record in map(json.loads, handle)]
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        retriever.save(str(out))
    seconds = time.perf_counter() - started
    peak = _status_mb("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "added_mb": peak - before}))


def build_in_child(engine: str, corpus: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child-build", engine, str(corpus), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved(engines: dict, queries: list[tuple[str, str]]) -> dict[str, dict]:
    """Run every query through every engine in turn; latencies (ms) and the ids each returned."""
    results = {name: {"ms": [], "ids": []} for name in engines}
    for query, _ in queries:
        for name, search in engines.items():
            started = time.perf_counter()
            ids = search(query)
            results[name]["ms"].append((time.perf_counter() - started) * 1000)
            results[name]["ids"].append(ids)
    return results


def found_at(ids: list[list[str]], queries: list[tuple[str, str]], k: int) -> int:
    return sum(target in found[:k] for found, (_, target) in zip(ids, queries))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30,000 documents, 200 queries")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--docs", type=int)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--baseline-queries", type=int, default=10)
    parser.add_argument("--child-build", nargs=3, metavar=("ENGINE", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build:
        engine, corpus, out = args.child_build
        child_build(engine, Path(corpus), Path(out))
        return 0
    docs = args.docs or (30_000 if args.quick else 100_000)
    query_count = args.queries or (200 if args.quick else 300)

    import bm25s
    import Stemmer

    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        corpus_path = Path(folder) / "corpus.jsonl"
        records = generate_corpus(corpus_path, docs)
        queries = make_queries(records, query_count)
        ours_build = build_in_child("ours", corpus_path, Path(folder) / "unused")
        bm25s_build = build_in_child("bm25s", corpus_path, Path(folder) / "bm25s")
        corpus = LocalCorpus(corpus_path)
        exhaustive = LocalCorpus(corpus_path, postings_budget=10**12)
        retriever = bm25s.BM25.load(str(Path(folder) / "bm25s"), mmap=False)
        stemmer = Stemmer.Stemmer("english")

        def bm25s_search(query: str) -> list[str]:
            tokens = bm25s.tokenize(query, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)
            documents, _ = retriever.retrieve(tokens, k=K, show_progress=False)
            return [records[number]["id"] for number in documents[0]]

        engines = {"ours": lambda query: [hit.doc_id for hit in corpus.search(query, K)],
                   "bm25s": bm25s_search}
        interleaved(engines, queries[:5])  # warm both: page cache, first allocations
        runs = interleaved(engines, queries)
        exact_ids = [[hit.doc_id for hit in exhaustive.search(query, K)] for query, _ in queries]

        tool = SearchTool("local", corpus=corpus_path, cache_path=Path(folder) / "cache.db", mode="live", k=K)
        tool_runs = interleaved({"tool": lambda query: tool.search(query).text}, queries)
        cached = SearchTool("local", corpus=corpus_path, cache_path=Path(folder) / "cache.db", mode="cache-first", k=K)
        hit_runs = interleaved({"hit": lambda query: cached.search(query).text}, queries)
        lowered = [f" {record['title']} {record['text']} ".lower() for record in records]
        naive = interleaved({"naive": lambda query: naive_search(records, lowered, query, K)},
                            queries[:args.baseline_queries])["naive"]

    ours, anchor = runs["ours"], runs["bm25s"]
    p50 = {name: statistics.median(run["ms"]) for name, run in runs.items()}
    p95 = {name: percentile(run["ms"], 0.95) for name, run in runs.items()}
    naive_p50 = statistics.median(naive["ms"])
    same_exact = sum(a[:1] == b[:1] for a, b in zip(ours["ids"], exact_ids)) / len(queries)
    same_bm25s = sum(a[:1] == b[:1] for a, b in zip(ours["ids"], anchor["ids"])) / len(queries)
    tool_p50 = statistics.median(tool_runs["tool"]["ms"])
    print(f"corpus: {docs:,} documents, {len(queries)} queries (3-4 words of one document each), k={K}")
    for name, build in (("workbench", ours_build), ("bm25s", bm25s_build)):
        print(f"  {name:9} index built in {build['seconds']:.2f} s, peak RSS {build['peak_mb']:.0f} MB "
              f"({build['added_mb']:.0f} MB over the process before the build)")
    print(f"  target@1 / @4: workbench {found_at(ours['ids'], queries, 1)} / {found_at(ours['ids'], queries, 4)}, "
          f"bm25s {found_at(anchor['ids'], queries, 1)} / {found_at(anchor['ids'], queries, 4)}, "
          f"naive scan (first {len(naive['ids'])}) {found_at(naive['ids'], queries, 4)} @4")
    print(f"  SearchTool: live p50 {tool_p50:.2f} ms, cache hit p50 {statistics.median(hit_runs['hit']['ms']):.2f} ms")
    figures = [
        Figure("search_p50_vs_bm25s", p50["ours"], "ms", "ratio <= 1.0 (ours / bm25s)",
               p50["ours"] <= p50["bm25s"], baseline=naive_p50, anchor=p50["bm25s"],
               ratio=ratio(p50["ours"], p50["bm25s"]),
               note=f"{docs:,} docs, {len(queries)} queries interleaved with bm25s's; baseline = naive Python scan"),
        Figure("search_p95_vs_bm25s", p95["ours"], "ms", "ratio <= 1.0 (ours / bm25s)",
               p95["ours"] <= p95["bm25s"], anchor=p95["bm25s"], ratio=ratio(p95["ours"], p95["bm25s"])),
        Figure("search_same_first_hit_as_exhaustive_bm25", same_exact, "", f"ours >= {TARGET_SAME_FIRST_HIT}",
               same_exact >= TARGET_SAME_FIRST_HIT, anchor=same_bm25s,
               note=f"anchor = share of queries whose first hit is bm25s's ({same_bm25s:.1%}; its "
                    "tokenizer, stemmer and k1 differ)"),
        Figure("search_source_doc_first_vs_bm25s", found_at(ours["ids"], queries, 1) / len(queries), "",
               "reported", True, anchor=found_at(anchor["ids"], queries, 1) / len(queries),
               note="share of queries whose first hit is the document they were drawn from (titles here are random "
                    f"words, which our double title weight does not help); in the top {K}: ours "
                    f"{found_at(ours['ids'], queries, K) / len(queries):.1%}, bm25s "
                    f"{found_at(anchor['ids'], queries, K) / len(queries):.1%}"),
        Figure("search_build_peak_memory_vs_bm25s", ours_build["added_mb"], "MB", "ratio <= 1.0 (ours / bm25s)",
               ours_build["added_mb"] <= bm25s_build["added_mb"], anchor=bm25s_build["added_mb"],
               ratio=ratio(ours_build["added_mb"], bm25s_build["added_mb"]),
               note="RSS added by the build in a fresh process"),
        Figure("search_build_seconds_vs_bm25s", ours_build["seconds"], "s", "reported",
               True, anchor=bm25s_build["seconds"], ratio=ratio(ours_build["seconds"], bm25s_build["seconds"])),
        Figure("search_tool_live_p50", tool_p50, "ms", f"ours <= {TARGET_TOOL_P50_MS:g} ms",
               tool_p50 <= TARGET_TOOL_P50_MS, baseline=naive_p50),
    ]
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
