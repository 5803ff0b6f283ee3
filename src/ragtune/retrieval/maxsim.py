"""Late interaction (ColBERT-style MaxSim) as a second stage, on sentence-transformers' MultiVectorEncoder.

A document's token vectors are computed once (at index time, stored as `TokenVectors`); at query time only the
query is encoded, and each candidate scores the sum over query tokens of their best match among its tokens. Over
50 candidates of 256 tokens that is a (32 x 128) by (128 x 12,800) product: a fraction of a millisecond, where a
cross-encoder runs the whole transformer over every pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragtune.config.retrieval import RerankSection
from ragtune.models.device import Placement
from ragtune.retrieval.base import Hits
from ragtune.retrieval.dense import reduced_precision_copy
from ragtune.retrieval.rerank import order

TOKEN_DTYPES = ("int8", "fp16")
_META = "tokens.json"


@dataclass
class TokenVectors:
    """Every chunk's token vectors, concatenated in row order: chunk i is data[offsets[i]:offsets[i + 1]].

    int8 keeps one float32 scale per token (symmetric, scale = max |x| / 127: the vectors are unit length, so a
    token's largest component sets its range); fp16 keeps the values as they are, at twice the bytes."""

    data: np.ndarray  # (tokens, dim) int8 or float16
    offsets: np.ndarray  # (chunks + 1,) int64
    scales: np.ndarray | None = None  # (tokens,) float32, int8 only

    @property
    def dtype(self) -> str:
        return "int8" if self.data.dtype == np.int8 else "fp16"

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.offsets.nbytes + (self.scales.nbytes if self.scales is not None else 0))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def quantize(cls, vectors: list[np.ndarray], dtype: str = "int8", dim: int | None = None) -> TokenVectors:
        dim = dim if dim is not None else (vectors[0].shape[1] if vectors else 0)
        offsets = np.zeros(len(vectors) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(v) for v in vectors])
        flat = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, dim), dtype=np.float32)
        if dtype == "fp16":
            return cls(flat.astype(np.float16), offsets)
        scales = np.maximum(np.abs(flat).max(axis=1), 1e-12) / 127.0 if len(flat) else np.zeros(0)
        data = np.clip(np.rint(flat / scales[:, None]), -127, 127).astype(np.int8) if len(flat) else \
            np.zeros((0, dim), dtype=np.int8)
        return cls(data, offsets, scales.astype(np.float32))

    def get(self, row: int) -> np.ndarray:
        """Chunk `row`'s token vectors as float32, (tokens, dim)."""
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        values = np.asarray(self.data[start:end], dtype=np.float32)
        return values * self.scales[start:end, None] if self.scales is not None else values

    def take(self, rows: list[int]) -> TokenVectors:
        """The chunks at `rows`, in that order (the kept chunks of a new index version)."""
        spans = [(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]
        index = np.concatenate([np.arange(a, b) for a, b in spans]) if spans else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([b - a for a, b in spans])
        return TokenVectors(np.asarray(self.data[index]), offsets,
                            np.asarray(self.scales[index]) if self.scales is not None else None)

    @classmethod
    def concat(cls, parts: list[TokenVectors]) -> TokenVectors:
        offsets = [np.zeros(1, dtype=np.int64)]
        total = 0
        for part in parts:
            offsets.append(part.offsets[1:] + total)
            total += int(part.offsets[-1])
        scales = np.concatenate([p.scales for p in parts]) if parts[0].scales is not None else None
        return cls(np.concatenate([np.asarray(p.data) for p in parts]), np.concatenate(offsets), scales)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", np.ascontiguousarray(self.data))
        np.save(folder / "offsets.npy", self.offsets)
        if self.scales is not None:
            np.save(folder / "scales.npy", self.scales)
        (folder / _META).write_text(json.dumps({"dtype": self.dtype, "chunks": len(self),
                                                "tokens": int(self.offsets[-1]), "dim": int(self.data.shape[1]),
                                                "bytes": self.nbytes}), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> TokenVectors:
        """Memory-mapped: a query reads only its candidates' tokens."""
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        data = np.load(folder / "vectors.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy")
        scales = np.load(folder / "scales.npy") if meta["dtype"] == "int8" else None
        if len(offsets) != meta["chunks"] + 1 or data.shape[0] != offsets[-1]:
            raise ValueError(f"holds {data.shape[0]} token vectors for {len(offsets) - 1} chunks, but {_META} says "
                             f"{meta['tokens']} for {meta['chunks']}")
        return cls(data, offsets, scales)


def maxsim_scores(query: np.ndarray, documents: list[np.ndarray]) -> np.ndarray:
    """Sum over query tokens of the best dot product with any of a document's tokens, per document."""
    if not documents:
        return np.zeros(0, dtype=np.float32)
    lengths = np.array([len(d) for d in documents])
    scores = np.zeros(len(documents), dtype=np.float32)
    present = lengths > 0
    if not present.any():
        return scores
    import torch

    flat = np.concatenate([d for d in documents if len(d)]).astype(np.float32, copy=False)
    # (query tokens, all candidate tokens), on torch's threads: numpy's OpenBLAS pool busy-waits after a call and
    # took the two cores from the next query's encoding (7 ms -> 40 ms)
    similarity = (torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)) @ torch.from_numpy(flat).T).numpy()
    starts = np.concatenate([[0], np.cumsum(lengths[present])[:-1]])
    scores[present] = np.maximum.reduceat(similarity, starts, axis=1).sum(axis=0)
    return scores


class MaxSimReranker:
    """Reorders a first stage's top k by MaxSim. Document token vectors come from `store` (rows by chunk id) where
    it holds them, else they are encoded (and kept for this reranker's lifetime)."""

    def __init__(self, model, placement: Placement, store: TokenVectors | None = None,
                 rows: dict[str, int] | None = None, name: str = "maxsim", batch_size: int | None = None,
                 settings: RerankSection | None = None):
        """`settings.first_stage_weight` mixes in the first stage's score, as for a cross-encoder."""
        self.model, self.placement, self.store, self.rows = model, placement, store, rows or {}
        self.name, self.batch_size = name, batch_size
        self.settings = settings or RerankSection()
        self._encoded: dict[str, np.ndarray] = {}

    def _encode(self, texts: list[str], side: str) -> list[np.ndarray]:
        import torch

        module, context = reduced_precision_copy(self.model, self.placement)
        run = module.encode_query if side == "query" else module.encode_document
        with context, torch.inference_mode():
            out = run(texts, batch_size=self.batch_size or self.placement.encode_batch_size,
                      show_progress_bar=False)
        return [np.asarray(t.float().cpu().numpy(), dtype=np.float32) for t in out]

    def encode_query(self, query: str) -> np.ndarray:
        return self._encode([query], "query")[0]

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts, "document") if texts else []

    def document_vectors(self, ids: list[str], corpus) -> list[np.ndarray]:
        stored = {d: self.store.get(self.rows[d]) for d in ids if self.store is not None and d in self.rows}
        todo = list(dict.fromkeys(corpus[d] for d in ids if d not in stored and corpus[d] not in self._encoded))
        self._encoded.update(zip(todo, self.encode_documents(todo)))
        return [stored[d] if d in stored else self._encoded[corpus[d]] for d in ids]

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        return maxsim_scores(self.encode_query(query), self.encode_documents(documents))

    def rerank(self, query: str, hits: Hits, corpus, rerank_k: int) -> Hits:
        head, tail = hits[:rerank_k], hits[rerank_k:]
        scores = maxsim_scores(self.encode_query(query), self.document_vectors([d for d, _ in head], corpus))
        return order(head, scores, tail, self.settings.first_stage_weight)
