"""What every retriever shares: ranked hits, runs, and the checks on a corpus and a cut-off."""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np

from ragtune.errors import DataError

Hits = list[tuple[str, float]]  # (doc id, score), best first
Allowed = frozenset[str] | None  # the doc ids a metadata filter keeps (None: every doc)
Run = dict[str, dict[str, float]]  # query id -> {doc id: score}, the ranx/trec_eval shape


class Retriever(Protocol):
    """A first stage: built over a corpus, returns the best k documents per query, of the `allowed` ones alone
    when a filter gives them (the top k is cut after the filter, so k come back when k exist)."""

    name: str

    def search(self, queries: list[str], k: int, allowed: Allowed = None) -> list[Hits]: ...


def check_corpus(corpus: dict[str, str], source: str = "corpus") -> None:
    """An empty corpus cannot be searched; say so before any index is built."""
    if not corpus:
        raise DataError(f"{source}: the corpus is empty; give at least one document")


def clamp_k(k: int, n_docs: int) -> int:
    """k larger than the corpus returns the whole corpus, ranked."""
    if k <= 0:
        raise DataError(f"k must be a positive number of documents, got {k}")
    return min(k, n_docs)


def texts_fingerprint(texts: list[str], *parts: object) -> str:
    """A stable hash of an ordered list of texts plus settings, for cache keys and index manifests."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode("utf-8") + b"\x00")
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()


def min_max(values) -> np.ndarray:
    """Scores scaled to [0, 1] (all equal: all 0), for fusing or mixing scores of different scales."""
    values = np.asarray(values, dtype=np.float64)
    return (values - values.min()) / max(float(values.max() - values.min()), 1e-9) if len(values) else values


def row_map(doc_ids: list[str], cache: dict) -> dict[str, int]:
    """Each id's row in `doc_ids`, built once and kept in `cache` (rebuilt if the list grows)."""
    if cache.get("size") != len(doc_ids):
        cache.update(size=len(doc_ids), rows={d: i for i, d in enumerate(doc_ids)}, last=None)
    return cache["rows"]


def positions(doc_ids: list[str], allowed: frozenset[str], cache: dict) -> np.ndarray:
    """Rows of the allowed ids in `doc_ids` (int64, sorted). `cache` keeps the id -> row map between calls, and
    the answer for the last allowed set: an index hands the same set for every query under one filter, or under
    its deletions, and a million ids take a while to look up."""
    rows = row_map(doc_ids, cache)
    if cache.get("last") is not None and cache["last"][0] is allowed:
        return cache["last"][1]
    found = np.array(sorted(rows[d] for d in allowed if d in rows), dtype=np.int64)
    cache["last"] = (allowed, found)  # the set itself is kept, so its identity cannot be reused by another
    return found


def row_mask(doc_ids: list[str], allowed: frozenset[str], cache: dict) -> np.ndarray:
    """A boolean mask over `doc_ids` of the allowed ones, kept with the rows for the same allowed set."""
    rows = positions(doc_ids, allowed, cache)
    if cache.get("mask") is None or cache["mask"][0] is not rows:
        mask = np.zeros(len(doc_ids), dtype=bool)
        mask[rows] = True
        cache["mask"] = (rows, mask)
    return cache["mask"][1]


def to_run(query_ids: list[str], hits: list[Hits]) -> Run:
    return {qid: dict(h) for qid, h in zip(query_ids, hits)}
