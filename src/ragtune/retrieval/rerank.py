"""Cross-encoder reranking of a first stage's top k: batched, length-sorted, in reduced precision where it pays."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ragtune.config.retrieval import RerankSection
from ragtune.models.device import Placement
from ragtune.retrieval.base import Hits, min_max
from ragtune.retrieval.dense import reduced_precision_copy

log = logging.getLogger(__name__)


class Reranker:
    """Scores (query, document) pairs with a sentence-transformers CrossEncoder and reorders candidates."""

    def __init__(self, model, placement: Placement, settings: RerankSection | None = None, name: str = "rerank"):
        self.model, self.placement = model, placement
        self.settings = settings or RerankSection()
        self.name = name

    @property
    def max_length(self) -> int:
        own = getattr(self.model, "max_seq_length", None) or 512
        return min(self.settings.max_length or own, own)

    @torch.inference_mode()
    def score(self, query: str, documents: list[str]) -> np.ndarray:
        """One relevance score per document (the model's activation applied), (n,)."""
        if not documents:
            return np.zeros(0, dtype=np.float32)
        model, context = reduced_precision_copy(self.model, self.placement)
        tokenizer = model.tokenizer
        # Tokenize once, truncating the document only, then batch by token length so padding is minimal.
        pairs = ([query] * len(documents), documents)
        try:
            encoded = tokenizer(*pairs, truncation="only_second", max_length=self.max_length)
        except Exception:  # noqa: BLE001 (the Rust tokenizer raises a bare Exception) the query alone is too long
            encoded = tokenizer(*pairs, truncation="longest_first", max_length=self.max_length)
        features = [{k: encoded[k][i] for k in encoded.keys()} for i in range(len(documents))]
        order = np.argsort([-len(f["input_ids"]) for f in features], kind="stable")
        transformer = model[0].auto_model
        scores = np.empty(len(documents), dtype=np.float32)
        size = self.settings.batch_size or self.placement.rerank_batch_size
        with context:
            for start in range(0, len(order), size):
                index = order[start:start + size]
                batch = tokenizer.pad([features[i] for i in index], return_tensors="pt").to(model.device)
                logits = transformer(**batch).logits
                logits = logits[:, 0] if logits.shape[-1] == 1 else logits[:, -1]
                activation = getattr(model, "activation_fn", None)
                out = activation(logits.float()) if activation is not None else logits.float()
                scores[index] = out.cpu().numpy()
        return scores

    def rerank(self, query: str, hits: Hits, corpus, rerank_k: int) -> Hits:
        """Rescore the first `rerank_k` hits (texts from `corpus`, id -> text); the rest follow below them in their
        first-stage order."""
        head, tail = hits[:rerank_k], hits[rerank_k:]
        scores = self.score(query, [corpus[d] for d, _ in head])
        return order(head, scores, tail, self.settings.first_stage_weight)


def order(head: Hits, scores: np.ndarray, tail: Hits, first_stage_weight: float = 0.0) -> Hits:
    """The head ordered by reranker score (optionally mixed with its first-stage score), the tail below it."""
    if first_stage_weight > 0 and len(head) > 1:
        first = np.array([s for _, s in head], dtype=np.float64)
        scores = (1 - first_stage_weight) * min_max(scores) + first_stage_weight * min_max(first)
    # ties keep their first-stage order (a stable sort), as a cross-encoder gives twin texts the same score
    reranked = sorted(zip((d for d, _ in head), np.asarray(scores).tolist()), key=lambda item: -item[1])
    floor = min((s for _, s in reranked), default=0.0)
    return reranked + [(d, floor - 1.0 - i) for i, (d, _) in enumerate(tail)]
