"""`ragtune export onnx` (or `openvino`, --runtime) on the SciFact ladder's two tuned models, against torch, all
rows in one run.

1. The tuned embedder (`runs/scifact-embed`) is exported with its own quality gate: the export re-runs the run's
   evaluation split (SciFact test: 5,183 abstracts + 300 claims) in torch fp32, torch bf16 (where `auto` picks
   it), ONNX fp32 and ONNX int8, and records NDCG@10 and texts/s of each. Encoding throughput is that figure.
2. The tuned cross-encoder (`runs/scifact-rerank`) is exported the same way (its split: BM25's top 20 reranked).
3. Issue 16's query row: hybrid(BM25, tuned MiniLM) + the cross-encoder over the top 20, every SciFact test claim
   answered one at a time, with the reranker in each precision/backend. NDCG@10 and p50/p95 per query. The
   first stage is the same torch embedder in every row, so only the reranker differs.

Targets (issue 16): the best int8/bf16 row within 0.005 NDCG@10 of torch fp32 and at least 2x faster at p95;
embedder int8 ONNX at least 2x torch fp32's throughput at an NDCG@10 drop of at most 0.005.
Train the models first (python -m benchmarks.scifact_ladder, or the two train commands in
configs/eval/scifact-ladder.yaml). Needs `pip install -e .[onnx]` (`.[openvino]` for --runtime openvino).
Run: python -m benchmarks.onnx_export [--runtime onnx|openvino] [--embed-run runs/scifact-embed]
         [--rerank-run runs/scifact-rerank] [--export-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.rag_index import SCIFACT


def export(run: Path, out: Path, runtime: str) -> dict:
    """Export `run` to `out`, or read the record of an export already there (--export-dir)."""
    from ragtune.export.gate import gate_for
    from ragtune.export.onnx import export
    from ragtune.models.onnx_backend import export_record

    record = export_record(out) if out.is_dir() else None
    if record is None:
        folder, kind, build_gate = gate_for(run, None, "test")
        record = export(folder, out, kind, build_gate, runtime=runtime, note=print)
    for row in record["rows"]:
        print(f"  {row['name']:24s} NDCG@10 {row['metric']:.4f}  {row['per_second']:8.1f} {record['unit']}/s"
              f"{'' if row['passed'] else '  refused'}")
    print(f"  chosen: {record['chosen']}")
    return record


def reranker_variants(folder: Path, record: dict):
    """(name, model, placement) for torch fp32, torch at `auto` where it differs, and every exported row; an ONNX
    int8 file the gate refused is made again, so that its latency is measured too (marked as refused). A refused
    OpenVINO int8 file is not: its calibration belongs to the export."""
    from ragtune.export.onnx import PLAIN, quantize
    from ragtune.models.device import choose_placement, settle
    from ragtune.models.load import load_cross_encoder
    from ragtune.models.onnx_backend import Exported, attach

    fp32 = choose_placement("cpu", "fp32")
    model = load_cross_encoder(str(folder), fp32)
    yield "torch fp32", model, fp32
    auto = choose_placement("cpu", "auto")
    if settle(auto, model, "rerank").precision != "fp32":
        yield f"torch {settle(auto, model, 'rerank').precision}", model, auto
    for row in record["rows"]:
        if row["file"]:
            runtime = record["runtime"]
            if not (folder / runtime / row["file"]).is_file():
                if runtime != "onnx":
                    print(f"  {row['name']}: refused by the gate and removed, so not timed")
                    continue
                quantize(folder / "onnx" / PLAIN, row["file"].removeprefix("model_qint8_").removesuffix(".onnx"))
            name = row["name"] + ("" if row["passed"] else " (refused by the gate)")
            exported = Exported(runtime, row["file"], row.get("precision"))
            yield name, attach(load_cross_encoder(str(folder), fp32), folder, exported), fp32


def query_rows(embedder: Path, folder: Path, record: dict, weights: list[float], first_stage_weight: float,
               rerank_k: int) -> dict:
    from ragtune.config.retrieval import FusionSection, RerankSection, RetrievalConfig
    from ragtune.data.beir import load_beir
    from ragtune.eval.metrics import ir_metrics
    from ragtune.eval.retrieval import run_pipeline
    from ragtune.retrieval.pipeline import Pipeline, PipelineBuilder
    from ragtune.retrieval.rerank import Reranker
    from ragtune.retrieval.spec import parse_spec

    ir = load_beir(SCIFACT, "test")
    settings = RerankSection(first_stage_weight=first_stage_weight)
    config = RetrievalConfig(fusion=FusionSection(method="wsum", norm="min-max", weights=weights), rerank=settings,
                             backend="torch")
    spec = parse_spec(f"hybrid(bm25,dense:{embedder})")
    first = PipelineBuilder(ir.corpus, config).build(spec)
    rows = {}
    run, timing = run_pipeline(first, ir, 10)
    rows["hybrid alone"] = {"ndcg@10": round(ir_metrics(ir.qrels, run, ["ndcg"], [10])["ndcg@10"], 4),
                            "p50_ms": timing["query_p50_ms"], "p95_ms": timing["query_p95_ms"]}
    for name, model, placement in reranker_variants(folder, record):
        pipeline = Pipeline(spec, first.first, ir.corpus, Reranker(model, placement, settings), rerank_k)
        pipeline.search_timed(next(iter(ir.queries.values())), 10)  # warm-up
        run, timing = run_pipeline(pipeline, ir, 10)
        rows[f"+ cross-encoder@{rerank_k}, {name}"] = {
            "ndcg@10": round(ir_metrics(ir.qrels, run, ["ndcg"], [10])["ndcg@10"], 4),
            "p50_ms": timing["query_p50_ms"], "p95_ms": timing["query_p95_ms"],
            "rerank_p95_ms": timing["rerank_p95_ms"]}
    reference = rows[f"+ cross-encoder@{rerank_k}, torch fp32"]
    for name, row in rows.items():
        row["p95_speedup_vs_torch_fp32"] = round(reference["p95_ms"] / row["p95_ms"], 2)
        row["ndcg_drop_vs_torch_fp32"] = round(reference["ndcg@10"] - row["ndcg@10"], 4)
        print(f"{name:44s} NDCG@10 {row['ndcg@10']:.4f}  p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
              f"({row['p95_speedup_vs_torch_fp32']}x torch fp32's p95)")
    return rows


def ratios(record: dict) -> dict:
    base = next(r for r in record["rows"] if r["name"] == "torch fp32")["per_second"]
    return {r["name"]: round(r["per_second"] / base, 2) for r in record["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime", choices=["onnx", "openvino"], default="onnx")
    parser.add_argument("--embed-run", type=Path, default=Path("runs/scifact-embed"))
    parser.add_argument("--rerank-run", type=Path, default=Path("runs/scifact-rerank"))
    parser.add_argument("--fusion-weights", type=float, nargs=2, default=[0.3, 0.7])
    parser.add_argument("--first-stage-weight", type=float, default=0.8, help="the reranker's share kept from the "
                        "first stage (0.8: what the ladder's --tune-fusion fitted on train)")
    parser.add_argument("--export-dir", type=Path, default=None, help="keep the exports here and reuse them")
    parser.add_argument("--rerank-k", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = args.export_dir or Path(tmp)
        print("exporting the tuned embedder")
        embed = export(args.embed_run, where / "embed", args.runtime)
        print("exporting the tuned cross-encoder")
        rerank = export(args.rerank_run, where / "rerank", args.runtime)
        queries = query_rows(args.embed_run / "final", where / "rerank", rerank, args.fusion_weights,
                             args.first_stage_weight, args.rerank_k)
    print("encoding throughput against torch fp32:", ratios(embed))
    print("pair scoring throughput against torch fp32:", ratios(rerank))
    write_result(f"{args.runtime}_export", {"embedder": {**embed, "speedup_vs_torch_fp32": ratios(embed)},
                                 "cross_encoder": {**rerank, "speedup_vs_torch_fp32": ratios(rerank)},
                                 "queries": queries, "fusion_weights": args.fusion_weights,
                                 "first_stage_weight": args.first_stage_weight, "rerank_k": args.rerank_k})


if __name__ == "__main__":
    main()
