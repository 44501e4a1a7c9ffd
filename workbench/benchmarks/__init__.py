"""Benchmarks: MAT-style items in, scores out.

- `loaders`: MAT-Coding, MAT-Search and multi-hop item files (the paper's formats) as `BenchmarkItem`s;
- `scoring`: the paper's answer normalisation, F1/EM and split/type aggregation, and result files;
- `evaluation`: an agent run over a benchmark, stored and scored (resumable);
- `mat_coding_mini`, `mat_search_mini`: small MAT-style benchmarks generated offline from a seed
  (degraded synthetic images; a generated world of companies with a search corpus);
- `mini_expert`: a scripted expert that solves the mini benchmarks turn by turn (cold-start SFT data).
"""
