"""On-disk embedding cache: document embeddings keyed by model content, corpus content and encoding settings.

A second evaluation of the same model on the same corpus loads the matrix instead of encoding again. Files are
plain `.npy` written atomically and read with `allow_pickle=False`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODEL_FILES = (".safetensors", ".json", ".txt", ".model")  # weights, configs, vocabularies


def cache_root() -> Path:
    """RAGTUNE_CACHE, else $XDG_CACHE_HOME/ragtune, else ~/.cache/ragtune."""
    if os.environ.get("RAGTUNE_CACHE"):
        return Path(os.environ["RAGTUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ragtune"


_FINGERPRINTS: dict[tuple, str] = {}


def model_folder(name: str | Path) -> Path | None:
    """The local folder that holds a model: the path itself, or a hub id's snapshot in the HF cache; None when
    neither is on disk."""
    if Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), local_files_only=True))
    except Exception:  # noqa: BLE001 (not a repo id, or not cached) nothing on disk to fingerprint
        return None


def model_fingerprint(name: str | Path) -> str | None:
    """A hash of a saved model's weights, configs and vocabulary (a local folder, or a hub id's cached snapshot);
    None when the model is not on disk.

    Remembered per process by each file's name, size and modification time, so checking the same model again
    (index, query, cache key) does not read its weights again."""
    path = model_folder(name)
    if path is None:
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MODEL_FILES
                   and p.name != "README.md" and "checkpoint" not in p.parts[-2])
    stats = [file.stat() for file in files]
    key = (str(path.resolve()), *((str(f.relative_to(path)), st.st_size, st.st_mtime_ns) for f, st in zip(files, stats)))
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path)).encode() + b"\x00")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


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
