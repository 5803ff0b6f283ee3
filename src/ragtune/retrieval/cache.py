"""On-disk embedding cache: document embeddings keyed by model content, corpus content and encoding settings.

A second evaluation of the same model on the same corpus loads the matrix instead of encoding again. Files are
plain `.npy` written atomically and read with `allow_pickle=False`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ragtune.utils import cache_root

log = logging.getLogger(__name__)


class EmbeddingCache:
    """Get and put embedding matrices by key."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else cache_root() / "embeddings"
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, rows: int) -> np.ndarray | None:
        path = self._path(key)
        if path.is_file():
            try:
                matrix = np.load(path, allow_pickle=False)
                if matrix.shape[0] == rows:
                    self.hits += 1
                    return matrix
            except (OSError, ValueError):  # a damaged file is recomputed, not trusted
                log.warning("ignoring unreadable embedding cache file %s", path)
        self.misses += 1
        return None

    def put(self, key: str, matrix: np.ndarray) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npy")
            np.save(tmp, matrix, allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only or full disk only costs the cache
            log.warning("could not write the embedding cache at %s (%s); continuing without it", path, exc)
