"""Rerank truncation: what `rerank_max_length` buys in latency and costs in quality.

The shipped SciFact reranker (train it with `ragtune train rerank -c configs/rerank/scifact.yaml --allow-regression`)
reranks the BM25 top 50 of SciFact test claims for the latency (p50/p95 per claim), and the BM25 top 20 of every
test claim for NDCG@10 (the reranker alone), at several token limits per (claim, abstract) pair.
Run: python -m benchmarks.rerank_truncation [--model runs/scifact-rerank/final] [--lengths 192 128 96]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result
from ragtune.config.retrieval import RerankSection
from ragtune.data.beir import load_beir
from ragtune.eval.metrics import ir_metrics
from ragtune.models.device import choose_placement
from ragtune.models.load import load_cross_encoder
from ragtune.retrieval.base import to_run
from ragtune.retrieval.bm25 import BM25Retriever
from ragtune.retrieval.rerank import Reranker

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "runs" / "scifact-rerank" / "final"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[192, 128, 96])
    parser.add_argument("--latency-queries", type=int, default=20)
    args = parser.parse_args()
    ir = load_beir(SCIFACT, "test")
    query_ids = list(ir.qrels)
    hits = [sorted(h, key=lambda item: (-item[1], item[0]))
            for h in BM25Retriever.build(ir.corpus).search([ir.queries[q] for q in query_ids], 50)]
    placement = choose_placement()
    model = load_cross_encoder(args.model, placement)
    results = {"bm25_ndcg@10": ir_metrics(ir.qrels, to_run(query_ids, [h[:20] for h in hits]), ["ndcg"], [10])}
    for length in args.lengths:
        reranker = Reranker(model, placement, RerankSection(max_length=length, top_k=20))
        reranker.score(ir.queries[query_ids[0]], [ir.corpus[d] for d, _ in hits[0][:8]])  # warm-up, not timed
        seconds = []
        for qid, ranked in list(zip(query_ids, hits))[: args.latency_queries]:
            start = time.perf_counter()
            reranker.score(ir.queries[qid], [ir.corpus[d] for d, _ in ranked])
            seconds.append(time.perf_counter() - start)
        reranked = [reranker.rerank(ir.queries[q], h[:20], ir.corpus) for q, h in zip(query_ids, hits)]
        results[str(length)] = {"rerank50_p50_ms": round(1000 * float(np.percentile(seconds, 50))),
                                "rerank50_p95_ms": round(1000 * float(np.percentile(seconds, 95))),
                                **ir_metrics(ir.qrels, to_run(query_ids, reranked), ["ndcg"], [10])}
        print(f"{length:4d} tokens: rerank-50 p50 {results[str(length)]['rerank50_p50_ms']} ms, "
              f"p95 {results[str(length)]['rerank50_p95_ms']} ms; NDCG@10 {results[str(length)]['ndcg@10']:.4f}")
    write_result("rerank_truncation", {"model": args.model, "precision": placement.precision, **results})


if __name__ == "__main__":
    main()
