"""An index version is a list of immutable segments plus the chunks deleted since they were written.

A segment (INDEX/vN/s000001/) holds chunks.sqlite (its chunks, rows counted from 0), faiss.index, bm25/ and, for a
late-interaction index, multivector/. `add` writes one new segment for the new and changed files and links the
older segments into the new version (hard links: nothing is copied); `delete` only records chunk ids in the
version's state.sqlite. Every first stage searches each segment, skipping its deleted chunks and whatever a filter
leaves out, and merges the best k by score; `ragtune index compact` rewrites the live chunks as one segment.

The dense side is in dense_segments.py, so that reading an index's chunks imports no torch.

Rows are global: a segment's row r is row `offset + r` of the version, the order of every vector and chunk list.
BM25 keeps the whole version's statistics across segments (SegmentedBM25); deleted chunks still count in them
until a compaction.
"""

from __future__ import annotations

import bisect
import heapq
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragtune.retrieval.base import Allowed, Hits


@dataclass
class Segment:
    """One segment of a version: its folder, chunk database and first global row; `deleted` are its chunk ids
    that the version no longer holds."""

    folder: Path
    db: sqlite3.Connection
    offset: int
    size: int  # rows written, deleted ones included
    deleted: frozenset[str] = frozenset()
    _ids: list[str] | None = field(default=None, repr=False)
    _live: frozenset[str] | None = field(default=None, repr=False)

    def ids(self) -> list[str]:
        """Every chunk id in local row order, deleted ones included (row i is vector i)."""
        if self._ids is None:
            self._ids = [r[0] for r in self.db.execute("SELECT id FROM chunks ORDER BY row")]
        return self._ids

    def live(self, allowed: Allowed) -> Allowed:
        """What this segment may return: what a filter allows (deleted chunks already taken out of it), else its
        chunks but the deleted ones, else everything (None)."""
        if allowed is not None or not self.deleted:
            return allowed
        if self._live is None:
            self._live = frozenset(self.ids()) - self.deleted
        return self._live


def merge(per_part: list[list[Hits]], k: int) -> list[Hits]:
    """The best k of every part's hits, per query."""
    return [heapq.nlargest(k, (hit for hits in parts for hit in hits), key=lambda hit: hit[1])
            for parts in zip(*per_part)]


class SegmentedBM25:
    """BM25 over every segment with the live chunks' statistics, as a fresh build of them would score. Each
    segment's stored scores carry the IDF and average length of its own build (Lucene's BM25, the bm25s default:
    idf * tf / (tf + k1 * (1 - b + b * len / avg))), so a query term's term frequency is recovered from the stored
    score and rescored with the IDF and average length over the live chunks of all segments (deleted ones left
    out); the best k are then merged. A segment written before its lengths were stored keeps its own length
    normalisation, and its deleted chunks in its statistics."""

    name = "bm25"

    def __init__(self, segments: list[Segment], parts: list):
        from ragtune.retrieval.base import row_map

        self.segments, self.parts = segments, parts
        self.docs = [int(part._model.scores["num_docs"]) for part in parts]
        self.df = [np.diff(part._model.scores["indptr"]) for part in parts]  # documents per term id, as built
        self.dead = []  # each segment's deleted rows (a boolean mask), or None where nothing is deleted
        for seg, part in zip(segments, parts):
            rows = row_map(part.doc_ids, part._rows)
            dead = np.zeros(len(part.doc_ids), dtype=bool) if seg.deleted else None
            if dead is not None:
                dead[[rows[i] for i in seg.deleted if i in rows]] = True
            self.dead.append(dead)
        self.live_docs = [n - (int(d.sum()) if d is not None else 0) for n, d in zip(self.docs, self.dead)]
        lengths = [p.lengths for p in parts]
        self.avg = [float(np.mean(n)) if n is not None and len(n) else None for n in lengths]  # as built
        known = [n if d is None else n[~d] for n, d in zip(lengths, self.dead) if n is not None]
        self.avg_all = float(np.concatenate(known).mean()) if len(known) == len(parts) and \
            sum(map(len, known)) else None
        self._df_all: dict[str, int] = {}  # a term's live documents over all segments (a version never changes)

    def _idf(self, df, n):
        return np.log1p((n - df + 0.5) / (df + 0.5))

    def search(self, queries: list[str], k: int, allowed: Allowed = None) -> list[Hits]:
        live = [seg.live(allowed) for seg in self.segments]
        if len(self.parts) == 1 and self.dead[0] is None:  # the stored scores are already the whole index's
            return self.parts[0].search(queries, k, live[0]) if live[0] != frozenset() else [[] for _ in queries]
        tokens = self.parts[0]._tokenize(queries)  # every segment tokenizes alike (one BM25 section)
        found = [self._search_part(i, tokens, k, live[i]) for i in range(len(self.parts)) if live[i] != frozenset()]
        return merge(found, k) if found else [[] for _ in queries]

    def _rescored(self, i: int, tid: int, token: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of one term's documents in segment i, with the whole index's IDF and average length."""
        part, csc = self.parts[i], self.parts[i]._model.scores
        start, end = csc["indptr"][tid], csc["indptr"][tid + 1]
        rows, stored = csc["indices"][start:end], csc["data"][start:end].astype(np.float64)
        if token not in self._df_all:
            self._df_all[token] = sum(self._live_df(j, token) for j in range(len(self.parts)))
        idf_here = self._idf(int(self.df[i][tid]), self.docs[i])
        idf_all = self._idf(self._df_all[token], sum(self.live_docs))
        if self.avg_all is None or part.lengths is None:
            return rows, (stored * idf_all / idf_here).astype(np.float32)
        k1, b = part._model.k1, part._model.b
        length = part.lengths[rows].astype(np.float64)
        here = k1 * (1 - b + b * length / self.avg[i])
        share = np.minimum(stored / idf_here, 1 - 1e-9)  # tf / (tf + here)
        tf = share * here / (1 - share)
        return rows, (idf_all * tf / (tf + k1 * (1 - b + b * length / self.avg_all))).astype(np.float32)

    def _live_df(self, i: int, token: str) -> int:
        """The live chunks of segment i that hold `token`."""
        part = self.parts[i]
        tid = part._model.vocab_dict.get(token)
        if tid is None:
            return 0
        if self.dead[i] is None:
            return int(self.df[i][tid])
        csc = part._model.scores
        rows = csc["indices"][csc["indptr"][tid]:csc["indptr"][tid + 1]]
        return int(len(rows) - self.dead[i][rows].sum())

    def _search_part(self, i: int, queries: list[list[str]], k: int, live: Allowed) -> list[Hits]:
        """Segment i's best k for each tokenized query."""
        from ragtune.retrieval.base import row_mask

        part = self.parts[i]
        keep = None if live is None else row_mask(part.doc_ids, live, part._rows)
        out = []
        for tokens in queries:
            scores = self._scores(i, tokens)
            if keep is not None:
                scores[~keep] = 0.0
            top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
            out.append(sorted(((part.doc_ids[j], float(scores[j])) for j in top if scores[j] > 0),
                              key=lambda hit: -hit[1]))
        return out

    def _scores(self, i: int, tokens: list[str]) -> np.ndarray:
        """Segment i's scores of every row for one tokenized query, with the live chunks' statistics."""
        vocab = self.parts[i]._model.vocab_dict
        scores = np.zeros(self.docs[i], dtype=np.float32)
        for token in tokens:
            tid = vocab.get(token)
            if tid is not None and token:
                rows, rescored = self._rescored(i, tid, token)
                scores[rows] += rescored
        return scores

    def scores_for(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """BM25 scores of given chunks for one query, each from its own segment, as `search` scores them."""
        from ragtune.retrieval.base import row_map

        if len(self.parts) == 1 and self.dead[0] is None:
            return self.parts[0].scores_for(query, doc_ids)
        tokens = self.parts[0]._tokenize([query])[0]
        out = np.zeros(len(doc_ids), dtype=np.float32)
        for i, part in enumerate(self.parts):
            rows = row_map(part.doc_ids, part._rows)
            mine = [(j, rows[d]) for j, d in enumerate(doc_ids) if d in rows]
            if mine:
                scores = self._scores(i, tokens)
                out[[j for j, _ in mine]] = scores[[r for _, r in mine]]
        return out


class SegmentedTokens:
    """Token vectors of every segment, read by global row (MaxSim's store)."""

    def __init__(self, segments: list[Segment], parts: list):
        self.parts = parts
        self.offsets = [seg.offset for seg in segments]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def get(self, row: int) -> np.ndarray:
        i = bisect.bisect_right(self.offsets, row) - 1
        return self.parts[i].get(row - self.offsets[i])

    def take(self, rows: list[int]):
        """The chunks at global `rows`, in that order, as one TokenVectors (what a compaction keeps)."""
        from ragtune.retrieval.maxsim import TokenVectors

        runs: list[tuple[int, list[int]]] = []  # (segment, its local rows), one run per stretch in one segment
        for row in rows:
            i = bisect.bisect_right(self.offsets, row) - 1
            if not runs or runs[-1][0] != i:
                runs.append((i, []))
            runs[-1][1].append(row - self.offsets[i])
        return TokenVectors.concat([self.parts[i].take(local) for i, local in runs] or [self.parts[0].take([])])
