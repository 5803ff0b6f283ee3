"""Metadata-filtered search on a real index: query latency of hybrid retrieval with no filter and with filters that
keep about 50%, 10% and 1% of SciFact's chunks, the time to find the matching chunks (SQLite, first ask and
cached), and whether every filtered query still returns k results.

Each abstract gets a `bucket` field (0..99, from a hash of its id) and a `year` (2015..2024), so the filters are
`bucket<50`, `bucket<10` and `bucket<1`, plus `year>=2023 AND bucket<30` for two conditions. Reads
../shared/data/scifact (CC BY-NC; the index goes to a temporary folder).
Run: python -m benchmarks.filtered_search [--queries 100] [--k 10] [--docs 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result
from benchmarks.rag_index import SCIFACT, scifact_questions

FILTERS = {"none": None, "50%": ["bucket<50"], "10%": ["bucket<10"], "1%": ["bucket<1"],
           "two conditions": ["year>=2023", "bucket<30"]}


def write_corpus(folder: Path, docs: int) -> Path:
    out = folder / "docs" / "scifact.jsonl"
    out.parent.mkdir(parents=True)
    with out.open("w", encoding="utf-8") as handle:
        for line in (SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:docs]:
            row = json.loads(line)
            digest = int(hashlib.sha256(str(row["_id"]).encode()).hexdigest(), 16)
            handle.write(json.dumps({"text": f"{row['title']} {row['text']}", "doc": str(row["_id"]),
                                     "bucket": digest % 100, "year": 2015 + digest % 10}) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--docs", type=int, default=2000, help="SciFact abstracts to index (all: 5183)")
    args = parser.parse_args()
    from ragtune.index import Index, build_index

    questions = scifact_questions(args.queries)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_index(Path(tmp) / "index", [str(write_corpus(Path(tmp), args.docs))], "sentence-transformers/all-MiniLM-L6-v2")
        build_s = time.perf_counter() - start
        index = Index(Path(tmp) / "index")
        index.search(questions[0], args.k)  # loads the embedder
        for name, where in FILTERS.items():
            start = time.perf_counter()
            allowed = index.matching(where)
            match_ms = 1000 * (time.perf_counter() - start)
            start = time.perf_counter()
            index.matching(where)
            cached_ms = 1000 * (time.perf_counter() - start)
            times, short = [], 0
            for question in questions:
                start = time.perf_counter()
                hits = index.search(question, args.k, "hybrid", where)
                times.append(1000 * (time.perf_counter() - start))
                passing = index.size if allowed is None else len(allowed)
                short += len(hits) < min(args.k, passing)
                assert allowed is None or {d for d, _ in hits} <= allowed
            p50, p95 = np.percentile(times, [50, 95])
            rows[name] = {"chunks_kept": index.size if allowed is None else len(allowed),
                          "match_ms_first": round(match_ms, 1), "match_ms_cached": round(cached_ms, 3),
                          "p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "short_queries": short}
        size = index.size
        index.close()
    print(f"{size} chunks, built in {build_s:.0f} s; hybrid, k={args.k}, {len(questions)} queries")
    print(f"{'filter':<16}{'kept':>7}{'match ms':>10}{'cached':>8}{'p50 ms':>8}{'p95 ms':>8}{'short':>7}")
    for name, row in rows.items():
        print(f"{name:<16}{row['chunks_kept']:>7}{row['match_ms_first']:>10}{row['match_ms_cached']:>8}"
              f"{row['p50_ms']:>8}{row['p95_ms']:>8}{row['short_queries']:>7}")
    ratio = rows["10%"]["p95_ms"] / rows["none"]["p95_ms"]
    print(f"p95 with a 10% filter / without: {ratio:.2f}x")
    write_result("filtered_search", {"chunks": size, "build_s": round(build_s, 1), "k": args.k,
                                     "queries": len(questions), "filters": {k: v for k, v in FILTERS.items()},
                                     "rows": rows, "p95_10pct_over_none": round(ratio, 3)})


if __name__ == "__main__":
    main()
