"""Why the earlier int8 probes lost quality, and whether ONNX Runtime's dynamic int8 does better, on SciFact test.

Embedder rows (the packaged all-MiniLM-L6-v2, 5,183 abstracts, batch 32, length-sorted as ragtune encodes):
torch fp32, ragtune's bf16 copy where the CPU has bf16, ONNX Runtime fp32 (the graph `ragtune export onnx` writes:
eager attention, fused), and ORT dynamic int8 with per-tensor and with per-channel weight scales. For each:
documents/s, NDCG@10 of dense retrieval on the 300 test claims, and the mean cosine of the document vectors to fp32's.

Cross-encoder rows (`--cross-encoder FOLDER`, e.g. runs/scifact-rerank/final; BM25's top 20 for the first
`--queries` test claims): torch's `quantize_dynamic` on every Linear (the earlier probe's recipe) and on every
Linear but the classification head, then ORT int8 per-tensor, per-channel, and per-channel with the head (pooler
and classifier) left in fp32. For each: the mean per-query Pearson and Spearman correlation of its scores with
fp32's, and NDCG@10 of the reranked top 20.
Needs `pip install -e .[onnx]`.
Run: python -m benchmarks.onnx_int8 [--cross-encoder runs/scifact-rerank/final] [--queries 50]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import write_result
from benchmarks.rag_index import SCIFACT

BATCH = 32


def fp32():
    from ragtune.models.device import choose_placement

    return choose_placement("cpu", "fp32")


def ndcg10(ir, doc_vectors: np.ndarray, query_vectors: np.ndarray, doc_ids: list[str]) -> float:
    from ragtune.eval.metrics import ir_metrics

    scores = torch.from_numpy(query_vectors) @ torch.from_numpy(doc_vectors).T  # torch: OpenBLAS busy-waits
    top = torch.topk(scores, 100, dim=1)
    run = {q: {doc_ids[j]: float(s) for j, s in zip(top.indices[i].tolist(), top.values[i].tolist())}
           for i, q in enumerate(ir.queries)}
    return ir_metrics(ir.qrels, run, ["ndcg"], [10])["ndcg@10"]


def onnx_graphs(folder: Path, kind: str, per_tensor: bool = True, head_fp32: bool = False) -> dict[str, str]:
    """`folder`/onnx/: ragtune's traced and fused fp32 graph, plus dynamic int8 variants; name -> file."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ragtune.export.onnx import PLAIN, fuse, load_kind, trace

    (folder / "onnx").mkdir()
    plain = folder / "onnx" / PLAIN
    trace(folder, kind, plain)
    fuse(plain, load_kind(folder, kind)[0].model.config)
    files = {"onnxruntime fp32": PLAIN}
    head = [n.name for n in onnx.load(str(plain)).graph.node if "classifier" in n.name or "pooler" in n.name]
    variants = ([("per tensor", False, [])] if per_tensor else []) + [("per channel", True, [])]
    if head_fp32:
        variants.append(("per channel, head fp32", True, head))
    for name, per_channel, exclude in variants:
        out = f"int8-{len(files)}.onnx"
        quantize_dynamic(str(plain), str(folder / "onnx" / out), per_channel=per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=exclude, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        files[f"onnxruntime int8 {name}"] = out
    return files


def embedder_rows(ir) -> dict:
    from ragtune.models.load import load_embedder
    from ragtune.models.onnx_backend import Exported, attach
    from ragtune.models.resolve import resolve_model
    from ragtune.retrieval.dense import encode

    doc_ids = list(ir.corpus)
    docs, queries = [ir.corpus[d] for d in doc_ids], list(ir.queries.values())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        import shutil

        shutil.copytree(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), folder)
        files = onnx_graphs(folder, "embed")
        base = load_embedder(str(folder), fp32())
        models = {"torch fp32": (base, fp32())}
        from ragtune.models.device import cpu_supports_bf16

        if cpu_supports_bf16():
            from ragtune.models.device import Placement

            models["torch bf16 copy"] = (base, Placement("cpu", "bf16", "forced"))
        for name, file in files.items():
            models[name] = (attach(load_embedder(str(folder), fp32()), folder, Exported("onnx", file)), fp32())
        rows, reference = {}, None
        for name, (model, placement) in models.items():
            encode(model, docs[:BATCH], placement, BATCH)  # warm-up
            start = time.perf_counter()
            vectors = encode(model, docs, placement, BATCH)
            seconds = time.perf_counter() - start
            reference = vectors if reference is None else reference
            rows[name] = {"docs_per_s": round(len(docs) / seconds, 1),
                          "ndcg@10": round(ndcg10(ir, vectors, encode(model, queries, placement, BATCH), doc_ids), 4),
                          "cosine_to_fp32": round(float((vectors * reference).sum(1).mean()), 4)}
            print(f"{name:34s} {rows[name]['docs_per_s']:7.1f} docs/s  NDCG@10 {rows[name]['ndcg@10']:.4f}  "
                  f"cosine to fp32 {rows[name]['cosine_to_fp32']:.4f}")
    for row in rows.values():
        row["speedup_vs_torch_fp32"] = round(row["docs_per_s"] / rows["torch fp32"]["docs_per_s"], 2)
    return rows


def torch_int8(model, head_fp32: bool):
    """A copy of the cross-encoder with torch's dynamic int8 Linear layers (per tensor, torch's default)."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    quantized = copy.deepcopy(model)
    encoder = quantized[0].model
    linears = {name for name, m in encoder.named_modules() if isinstance(m, torch.nn.Linear)
               and not (head_fp32 and ("classifier" in name or "pooler" in name))}
    quantized[0].model = quantize_dynamic(encoder, {name: default_dynamic_qconfig for name in linears},
                                          dtype=torch.qint8)
    return quantized


def cross_encoder_rows(folder: Path, ir, n_queries: int, k: int = 20) -> dict:
    import shutil

    from scipy.stats import pearsonr, spearmanr

    from ragtune.config.retrieval import BM25Section
    from ragtune.eval.metrics import ir_metrics
    from ragtune.models.load import load_cross_encoder
    from ragtune.models.onnx_backend import Exported, attach
    from ragtune.retrieval.bm25 import BM25Retriever
    from ragtune.retrieval.rerank import Reranker

    query_ids = list(ir.queries)[:n_queries]
    hits = BM25Retriever.build(ir.corpus, BM25Section()).search([ir.queries[q] for q in query_ids], k)
    with tempfile.TemporaryDirectory() as tmp:
        copied = Path(tmp) / "model"
        shutil.copytree(folder, copied, ignore=shutil.ignore_patterns("onnx"))
        files = onnx_graphs(copied, "rerank", head_fp32=True)
        base = load_cross_encoder(str(copied), fp32())
        models = {"torch fp32": base, "torch quantize_dynamic, every Linear": torch_int8(base, False),
                  "torch quantize_dynamic, head fp32": torch_int8(base, True)}
        for name, file in files.items():
            models[name] = attach(load_cross_encoder(str(copied), fp32()), copied, Exported("onnx", file))
        rows, reference = {}, None
        for name, model in models.items():
            reranker = Reranker(model, fp32())
            scores = [reranker.score(ir.queries[q], [ir.corpus[d] for d, _ in h]) for q, h in zip(query_ids, hits)]
            reference = scores if reference is None else reference
            run = {q: {d: float(s) for (d, _), s in zip(h, sc)} for q, h, sc in zip(query_ids, hits, scores)}
            qrels = {q: ir.qrels[q] for q in query_ids}
            rows[name] = {"pearson": round(float(np.mean([pearsonr(a, b)[0] for a, b in zip(scores, reference)])), 4),
                          "spearman": round(float(np.mean([spearmanr(a, b)[0] for a, b in zip(scores, reference)])),
                                            4),
                          "ndcg@10": round(ir_metrics(qrels, run, ["ndcg"], [10])["ndcg@10"], 4)}
            print(f"{name:40s} Pearson {rows[name]['pearson']:.4f}  Spearman {rows[name]['spearman']:.4f}  "
                  f"NDCG@10 {rows[name]['ndcg@10']:.4f}")
    return rows


def main() -> None:
    from ragtune.data.beir import load_beir

    parser = argparse.ArgumentParser()
    parser.add_argument("--cross-encoder", type=Path, default=None, help="a cross-encoder folder for its rows")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--skip-embedder", action="store_true")
    args = parser.parse_args()
    ir = load_beir(SCIFACT, "test")
    result = {"documents": len(ir.corpus), "queries": len(ir.queries), "batch_size": BATCH}
    if not args.skip_embedder:
        result["rows"] = embedder_rows(ir)
    if args.cross_encoder:
        result["cross_encoder"] = {"model": str(args.cross_encoder), "queries": args.queries, "top_k": 20,
                                   "rows": cross_encoder_rows(args.cross_encoder, ir, args.queries)}
    write_result("onnx_int8", result)


if __name__ == "__main__":
    main()
