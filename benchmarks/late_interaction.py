"""Late interaction on SciFact: train a MaxSim model from all-MiniLM-L6-v2 (`ragtune train multivector`), then
measure hybrid alone against hybrid + MaxSim over its top 50.

- NDCG@10 on SciFact test (300 claims, 5,183 abstracts): the run's own before (hybrid alone) and after (hybrid +
  MaxSim@50), from `configs/multivector/scifact.yaml`;
- training time on this CPU;
- index size with the chunks' token vectors (int8, and fp16) against without;
- query p50/p95 on that index: hybrid alone, and hybrid + MaxSim@50 scored from the stored int8 vectors (only the
  query is encoded at query time).

Issue 16's targets for the MaxSim row: NDCG@10 >= 0.7863 (the ladder's hybrid + cross-encoder), p95 <= 100 ms on
2 cores. SciFact (CC BY-NC) is read from ../shared/data, never copied; the indexes go to a temporary folder.
- NDCG@10 of the ladder's hybrid (BM25 + the tuned MiniLM of `configs/embed/scifact.yaml`, `--embedder-run`) +
  MaxSim@50, with the documents' token vectors as encoded and as stored (int8, fp16).

Run: python -m benchmarks.late_interaction [--run RUN_DIR] [--queries 100] [key=value ...]
     (--run: skip training and measure an existing run; key=value: overrides for the training config)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.rag_index import SCIFACT, scifact_questions, time_queries

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "multivector" / "scifact.yaml"
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def train(overrides: list[str]) -> tuple[Path, dict]:
    from ragtune.config.load import load_config
    from ragtune.train.multivector import train_multivector

    cfg = load_config("multivector", CONFIG, overrides)
    result = train_multivector(cfg, overwrite=True)
    c = result.comparison
    print(f"trained in {result.train_seconds / 60:.1f} min on {result.train_examples} tuples; NDCG@10 hybrid alone "
          f"{c.before['ndcg@10']:.4f}, + MaxSim@{cfg.eval.rerank_k} {c.after['ndcg@10']:.4f} (target >= 0.7863)")
    return result.run_dir, {"train_seconds": round(result.train_seconds, 1), "train_tuples": result.train_examples,
                            "before": c.before, "after": c.after, "kept_base": c.kept_base}


def measured_run(run_dir: Path) -> dict:
    before, after = (json.loads((run_dir / f"eval_{w}.json").read_text()) for w in ("before", "after"))
    return {"before": before["metrics"], "after": after["metrics"]}


def stored_quality(model: str, embedder: str, fusion_weights: list[float], first_stage_weight: float,
                   rerank_k: int) -> dict:
    """NDCG@10 of hybrid(BM25, `embedder`) + MaxSim@`rerank_k` on SciFact test, with the documents' token vectors
    as encoded (float) and as the index stores them (int8, fp16), at fixed fusion settings (those `eval retrieval
    --tune-fusion` fitted on train)."""
    from ragtune.config.retrieval import FusionSection, RerankSection, RetrievalConfig
    from ragtune.data.beir import load_beir
    from ragtune.eval.metrics import ir_metrics
    from ragtune.eval.retrieval import run_pipeline
    from ragtune.retrieval.maxsim import TokenVectors
    from ragtune.retrieval.pipeline import PipelineBuilder
    from ragtune.retrieval.spec import parse_spec

    ir = load_beir(SCIFACT, "test")
    config = RetrievalConfig(fusion=FusionSection(method="wsum", weights=fusion_weights),
                             rerank=RerankSection(first_stage_weight=first_stage_weight))
    pipeline = PipelineBuilder(ir.corpus, config).build(
        parse_spec(f"hybrid(bm25,dense:{embedder})+maxsim:{model}@{rerank_k}"))
    scorer = pipeline.reranker
    ids = list(ir.corpus)
    encoded = scorer.encode_documents([ir.corpus[d] for d in ids])
    rows = {d: i for i, d in enumerate(ids)}
    quality = {}
    for dtype in ("float", "int8", "fp16"):
        scorer.store, scorer.rows = (None, {}) if dtype == "float" else (TokenVectors.quantize(encoded, dtype), rows)
        scorer._encoded = dict(zip([ir.corpus[d] for d in ids], encoded))  # float: the same vectors, unquantized
        run, _ = run_pipeline(pipeline, ir, 10)
        quality[dtype] = ir_metrics(ir.qrels, run, ["ndcg", "mrr"], [10])
        print(f"hybrid + MaxSim@{rerank_k}, document vectors {dtype}: NDCG@10 {quality[dtype]['ndcg@10']:.4f}")
    return quality


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=None, help="an existing `train multivector` run: skip training")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rerank-k", type=int, default=50)
    parser.add_argument("--embedder-run", default="runs/scifact-embed/final", help="the tuned embedder of the "
                        "ladder's hybrid, for the rows with stored vectors (skipped where it is absent)")
    parser.add_argument("--fusion-weights", type=float, nargs=2, default=[0.3, 0.7])
    parser.add_argument("--first-stage-weight", type=float, default=0.3)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for configs/multivector/scifact.yaml")
    args = parser.parse_args()
    run_dir, quality = (Path(args.run), measured_run(Path(args.run))) if args.run else train(args.overrides)
    model = str(run_dir / "final")
    stored = stored_quality(model, args.embedder_run, args.fusion_weights, args.first_stage_weight, args.rerank_k) \
        if Path(args.embedder_run).is_dir() else None

    from ragtune.config.rag import RAGSection
    from ragtune.config.retrieval import DenseSection, RetrievalConfig
    from ragtune.index import Index, build_index
    from ragtune.rag.pipeline import RAGPipeline

    config = RetrievalConfig(dense=DenseSection(cache=False))
    corpus = str(SCIFACT / "corpus.jsonl")
    sizes, builds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("plain", {}), ("int8", {"multivector": model}),
                            ("fp16", {"multivector": model, "token_dtype": "fp16"})):
            built = build_index(Path(tmp) / name, [corpus], EMBEDDER, config, **extra)
            sizes[name], builds[name] = folder_bytes(Path(tmp) / name), round(built.seconds, 1)
            print(f"index {name}: {sizes[name] / 2**20:.1f} MiB, built in {built.seconds:.0f} s")
        index = Index(Path(tmp) / "int8")
        tokens = index.info()["multivector"]
        questions = scifact_questions(args.queries)
        settings = RAGSection(rerank_k=args.rerank_k, k=10)
        latency = {"hybrid": time_queries(RAGPipeline(index, None, None, settings), questions),
                   f"hybrid+maxsim@{args.rerank_k}": time_queries(
                       RAGPipeline(index, index.maxsim(), None, settings), questions)}
    for row, figures in latency.items():
        print(f"{row}: p50 {figures['total_ms']['p50']:.0f} ms, p95 {figures['total_ms']['p95']:.0f} ms "
              f"(second stage p95 {figures['rerank_ms']['p95']:.0f} ms)")
    print(f"token vectors: {tokens['tokens']:,} for {index.size:,} chunks, int8 {tokens['bytes'] / 2**20:.1f} MiB; "
          f"index {sizes['plain'] / 2**20:.1f} MiB without, {sizes['int8'] / 2**20:.1f} MiB with int8, "
          f"{sizes['fp16'] / 2**20:.1f} MiB with fp16")
    write_result("late_interaction", {"run": str(run_dir), "quality": quality, "stored_quality": stored, "index_bytes": sizes,
                                      "build_seconds": builds, "token_vectors": tokens, "queries": args.queries,
                                      "rerank_k": args.rerank_k, "latency_ms": latency})


if __name__ == "__main__":
    main()
