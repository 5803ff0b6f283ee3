"""int8 through ONNX Runtime against torch for the embedder, on SciFact test: is dynamic int8 worth building an
export for, and which quantization explains the earlier probe's 0.937 cosine?

Rows, all in one run on the packaged all-MiniLM-L6-v2 (mean pooling, unit vectors, 256 tokens):
- torch fp32 (`SentenceTransformer.encode`), and ragtune's bf16 copy where the CPU has bf16;
- ONNX Runtime fp32, and dynamic int8 with per-tensor and with per-channel weight scales.

For each: documents/s over SciFact's 5,183 abstracts (batch 32, length-sorted as ragtune encodes), NDCG@10 of
dense retrieval on the 300 test claims, and the mean cosine of its document vectors to fp32's. (torch's
`quantize_dynamic` is not a row: swapping the quantized module into a loaded SentenceTransformer did not take
effect in the first run.)
Needs `pip install onnxruntime onnx` (not ragtune dependencies: sentence-transformers' own ONNX backend needs
optimum-onnx, which requires transformers < 4.58).
Run: python -m benchmarks.onnx_int8
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import write_result
from benchmarks.rag_index import SCIFACT

BATCH = 32


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ndcg10(ir, doc_vectors: np.ndarray, query_vectors: np.ndarray, doc_ids: list[str]) -> float:
    from ragtune.eval.metrics import ir_metrics

    scores = query_vectors @ doc_vectors.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(ir.queries)}
    return ir_metrics(ir.qrels, run, ["ndcg"], [10])["ndcg@10"]


def sorted_batches(texts: list[str]) -> list[list[int]]:
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [order[i:i + BATCH] for i in range(0, len(order), BATCH)]


def onnx_encoder(model, path: Path, tokenizer, max_length: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), model.get_embedding_dimension()), dtype=np.float32)
        for batch in sorted_batches(texts):
            inputs = tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=max_length,
                               return_tensors="np")
            feed = {k: v.astype(np.int64) for k, v in inputs.items() if k in names}
            hidden = session.run(None, feed)[0]
            mask = inputs["attention_mask"][..., None].astype(np.float32)
            out[batch] = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return unit(out)

    return encode


def torch_encoder(module):
    def encode(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return unit(module.encode(texts, batch_size=BATCH, convert_to_numpy=True).astype(np.float32))

    return encode


def export(model, folder: Path, max_length: int) -> Path:
    transformer = model[0].auto_model.eval()
    sample = model.tokenizer(["a short example", "and a second, longer example sentence"], padding=True,
                             return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    path = folder / "model.onnx"
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"last_hidden_state": {0: "batch", 1: "tokens"}}
    class Named(torch.nn.Module):  # keyword inputs for the tracer, the hidden states out
        def __init__(self):
            super().__init__()
            self.inner = transformer

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    torch.onnx.export(Named(), tuple(sample[n] for n in names), str(path), input_names=names,
                      output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def main() -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    from ragtune.data.beir import load_beir
    from ragtune.models.cpu import cpu_summary
    from ragtune.models.resolve import resolve_model

    ir = load_beir(SCIFACT, "test")
    doc_ids = list(ir.corpus)
    docs = [ir.corpus[d] for d in doc_ids]
    queries = list(ir.queries.values())
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    max_length = model.max_seq_length
    encoders = {"torch fp32": torch_encoder(model)}
    if "-BF16" not in cpu_summary():
        encoders["torch bf16 copy"] = torch_encoder(copy.deepcopy(model).to(torch.bfloat16))
    with tempfile.TemporaryDirectory() as tmp:
        plain = export(model, Path(tmp), max_length)
        encoders["onnxruntime fp32"] = onnx_encoder(model, plain, model.tokenizer, max_length)
        for name, per_channel in (("per tensor", False), ("per channel", True)):
            out = Path(tmp) / f"int8-{per_channel}.onnx"
            quantize_dynamic(str(plain), str(out), per_channel=per_channel, weight_type=QuantType.QInt8)
            encoders[f"onnxruntime int8 {name}"] = onnx_encoder(model, out, model.tokenizer, max_length)

        rows, reference = {}, None
        for name, encode in encoders.items():
            encode(docs[:BATCH])  # warm-up
            start = time.perf_counter()
            vectors = encode(docs)
            seconds = time.perf_counter() - start
            reference = vectors if reference is None else reference
            rows[name] = {"docs_per_s": round(len(docs) / seconds, 1),
                          "ndcg@10": round(ndcg10(ir, vectors, encode(queries), doc_ids), 4),
                          "cosine_to_fp32": round(float((vectors * reference).sum(1).mean()), 4)}
            print(f"{name:32s} {rows[name]['docs_per_s']:7.1f} docs/s  NDCG@10 {rows[name]['ndcg@10']:.4f}  "
                  f"cosine to fp32 {rows[name]['cosine_to_fp32']:.4f}")
    base = rows["torch fp32"]["docs_per_s"]
    for name, row in rows.items():
        row["speedup_vs_torch_fp32"] = round(row["docs_per_s"] / base, 2)
    print({name: row["speedup_vs_torch_fp32"] for name, row in rows.items()})
    write_result("onnx_int8", {"documents": len(docs), "queries": len(queries), "batch_size": BATCH,
                               "max_length": max_length, "rows": rows})


if __name__ == "__main__":
    main()
