"""BM25 with bm25s: stemmed, stopword-filtered, saved to and loaded from disk without pickle."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ragtune.config.retrieval import BM25Section
from ragtune.errors import DataError
from ragtune.retrieval.base import Allowed, Hits, check_corpus, clamp_k, row_map, row_mask

log = logging.getLogger(__name__)

# PyStemmer language -> bm25s stopword list name (bm25s ships lists for these).
STOPWORDS = {"english": "en", "porter": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it",
             "portuguese": "pt", "dutch": "nl", "swedish": "sv", "norwegian": "no", "danish": "da",
             "russian": "ru", "turkish": "tr"}


class BM25Retriever:
    """Lexical first stage over a fixed corpus."""

    name = "bm25"

    def __init__(self, settings: BM25Section | None = None):
        self.settings = settings or BM25Section()
        self.doc_ids: list[str] = []
        self._model = None
        self._stemmer = None
        self._rows: dict = {}  # the row of each document id, built once (base.row_map)
        self.lengths: np.ndarray | None = None  # tokens per document, as scored (an index's segments need them)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        import bm25s

        if self._stemmer is None and self.settings.stemming:
            import Stemmer

            self._stemmer = Stemmer.Stemmer(self.settings.language)
        stopwords = STOPWORDS.get(self.settings.language) if self.settings.stopwords else None
        if self.settings.stopwords and stopwords is None:
            log.warning("bm25s has no stopword list for %s; keeping every word", self.settings.language)
        return bm25s.tokenize(texts, stopwords=stopwords, stemmer=self._stemmer, return_ids=False,
                              show_progress=False)

    @classmethod
    def build(cls, corpus: dict[str, str], settings: BM25Section | None = None) -> BM25Retriever:
        import bm25s

        check_corpus(corpus)
        retriever = cls(settings)
        retriever.doc_ids = list(corpus)
        tokens = retriever._tokenize([corpus[d] for d in retriever.doc_ids])
        # bm25s needs at least one term in the vocabulary; a corpus of stopwords only has none.
        if not any(tokens):
            raise DataError("the corpus has no indexable words (every document is empty or stopwords only)")
        retriever._model = bm25s.BM25(k1=retriever.settings.k1, b=retriever.settings.b)
        retriever._model.index(tokens, show_progress=False)
        retriever.lengths = np.array([len(t) for t in tokens], dtype=np.int32)
        return retriever

    def search(self, queries: list[str], k: int, allowed: Allowed = None) -> list[Hits]:
        k = clamp_k(k, len(self.doc_ids))
        out: list[Hits] = [[] for _ in queries]
        mask = None
        if allowed is not None:  # bm25s scores the others 0, and hits scored 0 are dropped below
            mask = row_mask(self.doc_ids, allowed, self._rows).astype(np.float32)
            if not mask.any():
                return out
        tokens = self._tokenize(queries)
        # bm25s rejects queries with no known term; those get no hits rather than an error.
        vocab = self._model.vocab_dict
        known = [i for i, t in enumerate(tokens) if any(w in vocab for w in t)]
        if not known:
            return out
        # n_threads=0: bm25s maps in this thread; with 1 it starts a thread pool per call (serve's search p95: 114 ms
        # -> 100 ms at 8 clients, benchmarks/RESULTS.md)
        docs, scores = self._model.retrieve([[w for w in tokens[i] if w in vocab] for i in known], k=k,
                                            show_progress=False, n_threads=0, weight_mask=mask)
        for row, i in enumerate(known):
            out[i] = [(self.doc_ids[d], float(s)) for d, s in zip(docs[row], scores[row]) if s > 0]
        return out

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._model.save(str(folder), show_progress=False)
        (folder / "ragtune_bm25.json").write_text(json.dumps({"settings": self.settings.model_dump(),
                                                             "doc_ids": self.doc_ids}), encoding="utf-8")
        if self.lengths is not None:
            np.save(folder / "doc_lengths.npy", self.lengths, allow_pickle=False)

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> BM25Retriever:
        import bm25s

        folder = Path(folder)
        meta_path = folder / "ragtune_bm25.json"
        if not meta_path.is_file():
            raise DataError(f"{folder}: not a saved ragtune BM25 index (no ragtune_bm25.json)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        retriever = cls(BM25Section(**meta["settings"]))
        retriever.doc_ids = meta["doc_ids"]
        retriever._model = bm25s.BM25.load(str(folder), mmap=mmap, show_progress=False)
        if (folder / "doc_lengths.npy").is_file():  # written since segments: older indexes have none
            retriever.lengths = np.load(folder / "doc_lengths.npy", allow_pickle=False)
        return retriever

    def pair_scores(self, queries: list[str], doc_ids: list[str]) -> np.ndarray:
        """The BM25 score of doc_ids[i] for queries[i] (a mined pair's positive outside the top k)."""
        return np.array([self.scores_for(q, [d])[0] for q, d in zip(queries, doc_ids)], dtype=np.float32)

    def scores_for(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """BM25 scores of given documents for one query (used to score a known positive when mining)."""
        position = row_map(self.doc_ids, self._rows)
        vocab = self._model.vocab_dict
        terms = [w for w in self._tokenize([query])[0] if w in vocab]
        if not terms:
            return np.zeros(len(doc_ids), dtype=np.float32)
        all_scores = self._model.get_scores(terms)
        return np.array([all_scores[position[d]] if d in position else 0.0 for d in doc_ids], dtype=np.float32)
