"""Rerank latency: ragtune's Reranker against plain `CrossEncoder.predict`, the top 100 BM25 hits of one query.

All score the same 100 (query, abstract) pairs of SciFact test queries with the same cross-encoder; each query is
timed alone, the variants alternating query by query so machine drift hits all: plain fp32 `predict`, ragtune in
every precision the CPU offers, and ragtune's `auto` (measured per model). Reports p50/p95 per query, the ratio of
the p95s, and how far the scores differ. Target: p95 at least 1.5x faster than the plain call.
Run: python -m benchmarks.rerank_latency [--model CROSS_ENCODER] [--queries 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result
from ragtune.data.beir import load_beir
from ragtune.models.cpu import cpu_summary
from ragtune.models.device import choose_placement, precisions_offered, settle
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
    model = load_cross_encoder(args.model, choose_placement("cpu", "fp32"), new_head=True)
    rerankers = {f"ragtune {p}": Reranker(model, choose_placement("cpu", p)) for p in precisions_offered()}
    rerankers["ragtune auto"] = Reranker(model, choose_placement("cpu", "auto"))
    times: dict[str, list[float]] = {"plain": [], **{name: [] for name in rerankers}}
    diffs: dict[str, list[float]] = {name: [] for name in rerankers}
    for reranker in rerankers.values():
        reranker.score(queries[0], ["warm-up"])  # builds the bf16 copy (and settles auto) before any timing
    model.predict([(queries[0], "warm-up")])
    for query, hits in zip(queries, bm25.search(queries, args.top_k)):
        docs = [ir.corpus[d] for d, _ in hits]
        start = time.perf_counter()
        plain = model.predict([(query, d) for d in docs])
        times["plain"].append(time.perf_counter() - start)
        for name, reranker in rerankers.items():
            start = time.perf_counter()
            ours = reranker.score(query, docs)
            times[name].append(time.perf_counter() - start)
            diffs[name].append(float(np.max(np.abs(plain - ours))))
    stats = {name: {"p50_ms": round(1000 * float(np.percentile(v, 50)), 1),
                    "p95_ms": round(1000 * float(np.percentile(v, 95)), 1)} for name, v in times.items()}
    auto = settle(rerankers["ragtune auto"].placement, model, "rerank")  # what auto ran with (cached verdict)
    print(cpu_summary())
    for name, s in stats.items():
        ratio = stats["plain"]["p95_ms"] / s["p95_ms"]
        gap = f", max |score difference| {max(diffs[name]):.2e}" if name in diffs else ""
        print(f"{name:14s} top-{args.top_k} rerank: p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, "
              f"{ratio:.2f}x plain's p95{gap}")
    ratio = stats["plain"]["p95_ms"] / stats["ragtune auto"]["p95_ms"]
    print(f"p95 speed-up of auto ({auto.precision}: {auto.reason}): {ratio:.2f}x (target 1.5x)")
    write_result("rerank_latency", {"model": args.model, "queries": len(queries), "top_k": args.top_k,
                                    "auto": auto.precision, "auto_reason": auto.reason, "cpu": cpu_summary(),
                                    "latency": stats, "p95_speedup": round(ratio, 3),
                                    "max_score_difference": {k: max(v) for k, v in diffs.items()},
                                    "seconds": times})


if __name__ == "__main__":
    main()
