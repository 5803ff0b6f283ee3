"""The RAG index on all of SciFact (5,183 abstracts): indexing throughput and size on disk, query latency of hybrid
retrieval plus a rerank of the top 50, and the cost of adding 1% new documents against a full rebuild.

Targets: query p95 under 300 ms; incremental add of 1% under 5% of a full rebuild. The embedding cache is turned
off for the build and the add, so both encode for real. Reads ../shared/data/scifact (CC BY-NC; never copied:
the index is written to a temporary folder).
Run: python -m benchmarks.rag_index [--reranker MODEL] [--rerank-max-length N] [--queries 100]
     python -m benchmarks.rag_index --index INDEX ...   (latency only, on an index built by `ragtune index build`)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def split_corpus(folder: Path, held_back: float) -> tuple[Path, Path]:
    """SciFact's corpus as JSONL documents, minus `held_back` of them (written to a second file to add later)."""
    rows = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    cut = len(rows) - max(1, round(len(rows) * held_back))
    base, extra = folder / "base" / "corpus.jsonl", folder / "new" / "corpus.jsonl"
    for path, part in ((base, rows[:cut]), (extra, rows[cut:])):
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return base, extra


def scifact_questions(n: int) -> list[str]:
    return [json.loads(line)["text"] for line in
            (SCIFACT / "queries.jsonl").read_text(encoding="utf-8").splitlines()][:n]


def time_queries(pipeline, questions: list[str]) -> dict:
    """p50/p95 of retrieval, the second stage and both, per question (after one warm-up)."""
    pipeline.retrieve(questions[0])  # load the embedder and warm up
    timings: dict[str, list[float]] = {"retrieve_ms": [], "rerank_ms": [], "total_ms": []}
    for question in questions:
        measured: dict[str, float] = {}
        start = time.perf_counter()
        pipeline.retrieve(question, measured)
        timings["total_ms"].append(1000 * (time.perf_counter() - start))
        timings["retrieve_ms"].append(measured["retrieve_ms"])
        timings["rerank_ms"].append(measured.get("rerank_ms", 0.0))
    return {k: {"p50": round(float(np.percentile(v, 50)), 1), "p95": round(float(np.percentile(v, 95)), 1)}
            for k, v in timings.items()}


def query_latency(index, args) -> dict:
    """p50/p95 of retrieval, rerank and both over the first `args.queries` SciFact claims."""
    from ragtune.config.rag import RAGSection
    from ragtune.config.retrieval import RerankSection
    from ragtune.models.load import load_cross_encoder
    from ragtune.rag.pipeline import RAGPipeline
    from ragtune.retrieval.rerank import Reranker

    placement = index.placement
    model = load_cross_encoder(args.reranker or args.embedder, placement, new_head=args.reranker is None)
    reranker = Reranker(model, placement, RerankSection(max_length=args.rerank_max_length))
    pipeline = RAGPipeline(index, reranker, None, RAGSection(rerank_k=args.top_k, k=5))
    latency = time_queries(pipeline, scifact_questions(args.queries))
    print(f"hybrid + rerank of the top {args.top_k}: p50 {latency['total_ms']['p50']:.0f} ms, "
          f"p95 {latency['total_ms']['p95']:.0f} ms (target p95 < 300 ms); retrieval alone p95 "
          f"{latency['retrieve_ms']['p95']:.0f} ms, rerank p95 {latency['rerank_ms']['p95']:.0f} ms")
    return latency


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedder", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--reranker", default=None, help="cross-encoder; default: the MiniLM encoder with a new head "
                                                          "(the same compute as a trained MiniLM reranker)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--rerank-max-length", type=int, default=None, help="tokens per (question, chunk) pair; "
                        "default: the reranker's own limit")
    parser.add_argument("--index", default=None, help="time queries on this existing index; skip the build and add")
    args = parser.parse_args()
    if args.index:
        from ragtune.index import Index

        latency = query_latency(Index(Path(args.index)), args)
        write_result("rag_index_latency", {"index": args.index, "reranker": args.reranker,
                                           "rerank_max_length": args.rerank_max_length, "top_k": args.top_k,
                                           "queries": args.queries, "latency_ms": latency})
        return

    from ragtune.config.retrieval import DenseSection, RetrievalConfig
    from ragtune.index import Index, add_to_index, build_index

    config = RetrievalConfig(dense=DenseSection(cache=False))
    with tempfile.TemporaryDirectory() as tmp:
        base, extra = split_corpus(Path(tmp), 0.01)
        index_dir = Path(tmp) / "index"
        build = build_index(index_dir, [str(base), str(extra)], args.embedder, config)
        index = Index(index_dir)
        info = index.info()
        print(f"full build: {info['chunks']} chunks from 5,183 abstracts in {build.seconds:.1f} s "
              f"({info['chunks'] / build.seconds:.1f} chunks/s), {info['bytes'] / 2**20:.1f} MiB on disk")

        partial = Path(tmp) / "partial"
        build_index(partial, [str(base)], args.embedder, config)
        added = add_to_index(partial, [str(base), str(extra)])
        print(f"adding 1% ({added.chunks_added} chunks): {added.seconds:.1f} s = "
              f"{100 * added.seconds / build.seconds:.1f}% of the full build (target < 5%)")

        latency = query_latency(index, args)
    write_result("rag_index", {"chunks": info["chunks"], "bytes": info["bytes"], "build_seconds": round(build.seconds, 1),
                               "chunks_per_second": round(info["chunks"] / build.seconds, 1),
                               "add_1pct_seconds": round(added.seconds, 2),
                               "add_fraction_of_build": round(added.seconds / build.seconds, 4),
                               "top_k": args.top_k, "queries": args.queries, "latency_ms": latency,
                               "reranker": args.reranker, "rerank_max_length": args.rerank_max_length,
                               "threads": os.cpu_count()})


if __name__ == "__main__":
    main()
