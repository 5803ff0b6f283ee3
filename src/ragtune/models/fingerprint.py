"""Which model is this: a hash of a saved model's weights, configs and vocabulary, wherever it lies on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL_FILES = (".safetensors", ".json", ".txt", ".model")  # weights, configs, vocabularies


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


def weights_digest(model) -> str:
    """A hash of an in-memory model's weights (every tensor of its state dict, by name): equal digests, equal
    weights. model_fingerprint's twin for a model that is not, or not yet, saved."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
