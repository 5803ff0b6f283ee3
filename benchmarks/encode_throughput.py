"""Corpus encoding: ragtune's encoder against plain `SentenceTransformer.encode`, same model, same corpus.

Both encode the 3,358 PubMedQA passages and the 500 test questions with all-MiniLM-L6-v2 and are scored with the
same NDCG@10. Target: at least 1.8x docs/s with NDCG@10 equal to three decimals.
Run: python benchmarks/encode_throughput.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sentence_transformers import SentenceTransformer

from benchmarks.common import write_result
from ragtune.cli.quickstart_cmd import packaged
from ragtune.data.beir import load_beir
from ragtune.eval.metrics import ir_metrics
from ragtune.models.device import choose_placement
from ragtune.models.resolve import resolve_model
from ragtune.retrieval.dense import encode, search


def ndcg(query_emb, doc_emb, ir) -> float:
    scores, idx = search(np.ascontiguousarray(query_emb, dtype=np.float32),
                         np.ascontiguousarray(doc_emb, dtype=np.float32), 100)
    doc_ids, query_ids = list(ir.corpus), list(ir.queries)
    run = {q: {doc_ids[j]: float(s) for s, j in zip(scores[i], idx[i])} for i, q in enumerate(query_ids)}
    return ir_metrics(ir.qrels, run, ["ndcg"], [10])["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    ir = load_beir(packaged("pubmedqa"), "test")
    docs, queries = list(ir.corpus.values()), list(ir.queries.values())
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    placement = choose_placement("cpu")
    runs = {"plain": [], "ragtune": []}
    scores = {}
    for _ in range(args.repeats):  # alternate, so that drift on a noisy machine hits both
        start = time.perf_counter()
        d = model.encode(docs, batch_size=32, normalize_embeddings=True)
        runs["plain"].append(time.perf_counter() - start)
        scores["plain"] = ndcg(model.encode(queries, normalize_embeddings=True), d, ir)
        start = time.perf_counter()
        d = encode(model, docs, placement)
        runs["ragtune"].append(time.perf_counter() - start)
        scores["ragtune"] = ndcg(encode(model, queries, placement), d, ir)
    best = {k: min(v) for k, v in runs.items()}
    ratio = best["plain"] / best["ragtune"]
    print(f"plain SentenceTransformer.encode: {len(docs) / best['plain']:.1f} docs/s  ndcg@10 {scores['plain']:.4f}")
    print(f"ragtune encode ({placement.precision}): {len(docs) / best['ragtune']:.1f} docs/s  "
          f"ndcg@10 {scores['ragtune']:.4f}")
    print(f"speed-up: {ratio:.2f}x (target 1.8x); ndcg@10 equal to 3 decimals: "
          f"{round(scores['plain'], 3) == round(scores['ragtune'], 3)}")
    write_result("encode_throughput", {"documents": len(docs), "seconds": runs, "ndcg@10": scores,
                                       "precision": placement.precision, "speedup": round(ratio, 3)})


if __name__ == "__main__":
    main()
