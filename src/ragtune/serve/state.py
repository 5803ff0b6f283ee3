"""What the server holds: the index (swapped to a new version when another process changes it), the embedder with
its in-memory cache, the reranker and the generator. Everything loads once, at start-up; no request names a path."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ragtune.config.serve import ServeConfig
from ragtune.index import Index

log = logging.getLogger(__name__)


class LiveIndex:
    """The index's live version. `current()` re-reads CURRENT at most every `poll_s` seconds and opens a new
    version when it changed; a request keeps the Index it started with, so it never mixes versions (the writer
    keeps the previous version's files, and open ones stay readable)."""

    def __init__(self, root: str | Path, placement, poll_s: float, embedder: str | None = None):
        """`embedder` names the index's embedder elsewhere (the same weights); a different one fails here."""
        self.root, self.placement, self.poll_s = Path(root), placement, poll_s
        self._lock = threading.Lock()
        self._index = Index(self.root, placement, embedder)
        self._index.dense()  # the embedder loads now, and every later version shares it
        self._pointer, self._checked = self._read_pointer(), time.monotonic()

    def _read_pointer(self) -> str:
        from ragtune.index.store import CURRENT

        return (self.root / CURRENT).read_text(encoding="utf-8").strip()

    @property
    def model(self):
        return self._index.dense().model

    def current(self) -> Index:
        if time.monotonic() - self._checked < self.poll_s:
            return self._index
        with self._lock:
            self._checked = time.monotonic()
            try:
                pointer = self._read_pointer()
            except OSError:
                return self._index  # mid-switch: the old version answers
            if pointer != self._pointer:
                fresh = Index(self.root, self.placement, model=self.model)
                log.info("index %s: now serving %s (was %s)", self.root, pointer, self._pointer)
                self._index, self._pointer = fresh, pointer
        return self._index


class EmbeddingCache:
    """The last `size` embeddings by (prompt, text), with hits and misses counted for /metrics."""

    def __init__(self, size: int):
        self.size, self.hits, self.misses = size, 0, 0
        self._store: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            found = self._store.get(key)
            if found is not None:
                self._store.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return found

    def put(self, key: tuple, vector: np.ndarray) -> None:
        if not self.size:
            return
        with self._lock:
            self._store[key] = vector
            self._store.move_to_end(key)
            while len(self._store) > self.size:
                self._store.popitem(last=False)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ServeState:
    """Models and index for one server, loaded at start-up."""

    def __init__(self, index: str | Path, settings: ServeConfig, reranker: str | None = None,
                 generator: str | None = None, generator_model: str | None = None, embedder: str | None = None):
        from ragtune.models.device import choose_placement

        self.settings = settings
        self.placement = choose_placement()
        # one model call at a time, off the event loop: torch already uses every core for one call
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragtune-model")
        self.live = LiveIndex(index, self.placement, settings.index_poll_s, embedder)
        self.reranker = self.live.current().second_stage(reranker, settings.query.rerank_max_length) if reranker \
            else None
        self.cache = EmbeddingCache(settings.cache_size)
        self.generator = None
        if generator:
            from ragtune.clara.generator import clara_folder
            from ragtune.rag.generators import make_generator

            if clara_folder(generator) is not None:
                from ragtune.errors import ConfigError

                raise ConfigError(f"--generator {generator} is a CLaRa run; ragtune serve answers chats with a text "
                                  "generator (use the CLaRa run with ragtune query or eval rag)")
            self.generator = make_generator(generator, generator_model, placement=self.placement)
        self.embedder_name = self.live.current().manifest["embedder"]["name"]
        self.started = time.time()

    def embed(self, kind: str, texts: list[str]) -> list[np.ndarray]:
        """Vectors for texts, from the cache where it has them; `kind` is query or document (their prompts)."""
        dense = self.live.current().dense()
        prompt = dense.query_prompt if kind == "query" else dense.document_prompt
        found = [self.cache.get((prompt, t)) for t in texts]
        todo = [t for t, v in zip(texts, found) if v is None]
        if todo:
            from ragtune.retrieval.dense import encode

            fresh = dict(zip(todo, encode(dense.model, todo, self.placement, None, prompt)))
            for text, vector in fresh.items():
                self.cache.put((prompt, text), vector)
            found = [v if v is not None else fresh[t] for t, v in zip(texts, found)]
        return found

    def rerank_scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """One score per (query, document) pair, grouped by query for the cross-encoder."""
        scores: list[float] = [0.0] * len(pairs)
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        for query, rows in by_query.items():
            for i, score in zip(rows, self.reranker.score(query, [pairs[i][1] for i in rows]).tolist()):
                scores[i] = float(score)
        return scores
