"""Corpus encoding: ragtune's encoder against plain `SentenceTransformer.encode`, same model, same corpus.

All encode the 3,358 PubMedQA passages and the 500 test questions with all-MiniLM-L6-v2 and are scored with the
same NDCG@10: plain fp32 `encode` (batch 32), ragtune in every precision the CPU offers, and ragtune's `auto`.
Target: at least 1.8x docs/s with NDCG@10 equal to three decimals.
Run: python -m benchmarks.encode_throughput [--repeats 2] [--batch-sizes 16,32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sentence_transformers import SentenceTransformer

from benchmarks.common import write_result
from ragtune.data.beir import load_beir
from ragtune.eval.metrics import ir_metrics
from ragtune.models.cpu import cpu_summary
from ragtune.models.device import choose_placement, precisions_offered, settle
from ragtune.models.resolve import resolve_model
from ragtune.retrieval.dense import encode, search
from ragtune.utils import packaged_resource as packaged


def ndcg(query_emb, doc_emb, ir) -> float:
    scores, idx = search(np.ascontiguousarray(query_emb, dtype=np.float32),
                         np.ascontiguousarray(doc_emb, dtype=np.float32), 100)
    doc_ids, query_ids = list(ir.corpus), list(ir.queries)
    run = {q: {doc_ids[j]: float(s) for s, j in zip(scores[i], idx[i])} for i, q in enumerate(query_ids)}
    return ir_metrics(ir.qrels, run, ["ndcg"], [10])["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", default="16,32", help="ragtune batch sizes to time in each precision")
    args = parser.parse_args()
    ir = load_beir(packaged("pubmedqa"), "test")
    docs, queries = list(ir.corpus.values()), list(ir.queries.values())
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    variants = {f"ragtune {p} b{b}": (choose_placement("cpu", p), b) for p in precisions_offered() for b in sizes}
    variants["ragtune auto"] = (choose_placement("cpu", "auto"), None)  # the default batch size (16 on CPU)
    runs: dict[str, list[float]] = {"plain": [], **{name: [] for name in variants}}
    scores = {}
    encode(model, docs[:32], variants["ragtune auto"][0])  # settles auto (a probe, then cached) before any timing
    for _ in range(args.repeats):  # alternate, so that drift on a noisy machine hits all
        start = time.perf_counter()
        d = model.encode(docs, batch_size=32, normalize_embeddings=True)
        runs["plain"].append(time.perf_counter() - start)
        scores["plain"] = ndcg(model.encode(queries, normalize_embeddings=True), d, ir)
        for name, (placement, batch) in variants.items():
            start = time.perf_counter()
            d = encode(model, docs, placement, batch)
            runs[name].append(time.perf_counter() - start)
            scores[name] = ndcg(encode(model, queries, placement, batch), d, ir)
    best = {k: min(v) for k, v in runs.items()}
    auto = settle(variants["ragtune auto"][0], model, "encode")
    print(cpu_summary())
    for name in runs:
        print(f"{name:14s} {len(docs) / best[name]:.1f} docs/s, {best['plain'] / best[name]:.2f}x plain, "
              f"ndcg@10 {scores[name]:.4f}")
    ratio = best["plain"] / best["ragtune auto"]
    print(f"speed-up of auto ({auto.precision}: {auto.reason}): {ratio:.2f}x (target 1.8x); ndcg@10 equal to 3 "
          f"decimals: {round(scores['plain'], 3) == round(scores['ragtune auto'], 3)}")
    write_result("encode_throughput", {"documents": len(docs), "seconds": runs, "ndcg@10": scores,
                                       "cpu": cpu_summary(), "auto": auto.precision, "auto_reason": auto.reason,
                                       "speedup": round(ratio, 3)})

if __name__ == "__main__":
    main()
