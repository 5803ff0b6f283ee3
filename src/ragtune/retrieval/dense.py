"""Dense retrieval: length-sorted, reduced-precision encoding and an exact FAISS inner-product search."""

from __future__ import annotations

import copy
import logging
import time
from contextlib import nullcontext

import numpy as np

from ragtune.models.device import Placement

log = logging.getLogger(__name__)


def _encoder(model, placement: Placement):
    """The module to encode with, and the context to run it in.

    On CPU a bf16 copy of the weights beats autocast (no per-call casts: 2.6x against 2.0x over fp32 for MiniLM
    here, same NDCG@10 to three decimals); on GPUs autocast is as fast and needs no second copy.
    """
    if placement.device != "cpu" or placement.precision == "fp32":
        return model, placement.autocast()
    copy_ = copy.deepcopy(model)
    copy_.__dict__.pop("forward", None)  # drop training-time forward wrappers bound to the original
    return copy_.to(placement.dtype), nullcontext()


def encode(model, texts: list[str], placement: Placement, batch_size: int = 64, prompt: str | None = None,
           show_progress: bool = False) -> np.ndarray:
    """Unit-normalised float32 embeddings, (n, dim). Texts go longest first in batches, in reduced precision."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension() or 0), dtype=np.float32)
    encoder, context = _encoder(model, placement)
    with context:
        embeddings = encoder.encode(texts, batch_size=batch_size, prompt=prompt, normalize_embeddings=True,
                                    convert_to_tensor=True, show_progress_bar=show_progress)
    return np.ascontiguousarray(embeddings.float().cpu().numpy(), dtype=np.float32)


def search(query_embeddings: np.ndarray, doc_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with FAISS; returns (scores, indices), each (n_queries, k)."""
    import faiss

    index = faiss.IndexFlatIP(doc_embeddings.shape[1])
    index.add(doc_embeddings)
    return index.search(query_embeddings, min(k, doc_embeddings.shape[0]))


def dense_run(model, corpus: dict[str, str], queries: dict[str, str], placement: Placement, k: int = 100,
              batch_size: int = 64, query_prompt: str | None = None, document_prompt: str | None = None,
              show_progress: bool = False) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Retrieve the top k documents for every query; return the run and timings in seconds."""
    doc_ids = list(corpus)
    start = time.perf_counter()
    docs = encode(model, [corpus[d] for d in doc_ids], placement, batch_size, document_prompt, show_progress)
    encoded = time.perf_counter()
    query_ids = list(queries)
    emb = encode(model, [queries[q] for q in query_ids], placement, batch_size, query_prompt)
    scores, indices = search(emb, docs, k)
    done = time.perf_counter()
    run = {qid: {doc_ids[j]: float(s) for s, j in zip(scores[i], indices[i]) if j >= 0}
           for i, qid in enumerate(query_ids)}
    timings = {"index_build_s": encoded - start, "query_s": done - encoded,
               "query_ms_per_query": 1000 * (done - encoded) / max(1, len(query_ids))}
    return run, timings
