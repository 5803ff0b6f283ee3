"""The index's dense first stage over every segment (see segments.py); imported only when it is used, as it
brings in torch."""

from __future__ import annotations

import numpy as np

from ragtune.index.segments import Segment, merge
from ragtune.retrieval.base import Allowed, Hits
from ragtune.retrieval.dense import DenseRetriever


def _part_class(index) -> type[DenseRetriever]:
    """A segment's retriever: over its FAISS index, or over its pgvector table (pgvector.py)."""
    from ragtune.index.pgvector import PgSegment, PgVectorDense

    return PgVectorDense if isinstance(index, PgSegment) else DenseRetriever


class SegmentedDense(DenseRetriever):
    """The index's embedder over every segment's FAISS index: queries are encoded once, each segment is searched
    for its own best k, and the results are merged."""

    def __init__(self, model, placement, settings, model_path: str, segments: list[Segment], indexes: list):
        super().__init__(model, placement, settings, model_path, "dense")
        self.segments = segments
        self.parts = [_part_class(index)(model, placement, settings, model_path, "dense", index, seg.ids())
                      for seg, index in zip(segments, indexes)]
        self.doc_ids = [d for seg in segments for d in seg.ids()]

    def search_embeddings(self, embeddings: np.ndarray, k: int, allowed: Allowed = None) -> list[Hits]:
        found = [part.search_embeddings(embeddings, k, live) for part, seg in zip(self.parts, self.segments)
                 if (live := seg.live(allowed)) != frozenset()]
        return merge(found, k) if found else [[] for _ in embeddings]
