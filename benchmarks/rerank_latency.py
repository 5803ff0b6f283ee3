"""Rerank latency: ragtune's Reranker against plain `CrossEncoder.predict`, the top 100 BM25 hits of one query.

Both score the same 100 (query, abstract) pairs of SciFact test queries with the same cross-encoder; each query is
timed alone, the two alternating query by query so machine drift hits both. Reports p50/p95 per query, the ratio
of the p95s, and how far the two sets of scores differ. Target: p95 at least 1.5x faster than the plain call.
Run: python -m benchmarks.rerank_latency [--model CROSS_ENCODER] [--queries 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result
from ragtune.data.beir import load_beir
from ragtune.models.device import choose_placement
from ragtune.models.load import load_cross_encoder
from ragtune.retrieval.bm25 import BM25Retriever
from ragtune.retrieval.rerank import Reranker

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2",
                        help="cross-encoder; the default is the MiniLM encoder with a new head (same compute)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=100)
    args = parser.parse_args()
    ir = load_beir(SCIFACT, "test")
    bm25 = BM25Retriever.build(ir.corpus)
    queries = list(ir.queries.values())[: args.queries]
    placement = choose_placement()
    model = load_cross_encoder(args.model, placement, new_head=True)
    reranker = Reranker(model, placement)
    times: dict[str, list[float]] = {"plain": [], "ragtune": []}
    diffs = []
    reranker.score(queries[0], ["warm-up"])
    model.predict([(queries[0], "warm-up")])
    for query, hits in zip(queries, bm25.search(queries, args.top_k)):
        docs = [ir.corpus[d] for d, _ in hits]
        start = time.perf_counter()
        plain = model.predict([(query, d) for d in docs])
        times["plain"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ours = reranker.score(query, docs)
        times["ragtune"].append(time.perf_counter() - start)
        diffs.append(float(np.max(np.abs(plain - ours))))
    stats = {name: {"p50_ms": round(1000 * float(np.percentile(v, 50)), 1),
                    "p95_ms": round(1000 * float(np.percentile(v, 95)), 1)} for name, v in times.items()}
    ratio = stats["plain"]["p95_ms"] / stats["ragtune"]["p95_ms"]
    for name, s in stats.items():
        print(f"{name:8s} top-{args.top_k} rerank: p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms")
    print(f"p95 speed-up: {ratio:.2f}x (target 1.5x); precision {placement.precision}; "
          f"max |score difference| {max(diffs):.2e}")
    write_result("rerank_latency", {"model": args.model, "queries": len(queries), "top_k": args.top_k,
                                    "precision": placement.precision, "latency": stats,
                                    "p95_speedup": round(ratio, 3), "max_score_difference": max(diffs),
                                    "seconds": times})


if __name__ == "__main__":
    main()
