"""Load models by name, turning library failures into one clear ModelError."""

from __future__ import annotations

import logging
from pathlib import Path

from ragtune.errors import ModelError
from ragtune.models.device import Placement
from ragtune.models.resolve import resolve_model

log = logging.getLogger(__name__)


def load_embedder(name: str, placement: Placement, max_seq_length: int | None = None):
    """A SentenceTransformer on the chosen device; safetensors only, no remote code."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model(name)
    try:
        model = SentenceTransformer(path, device=placement.device, trust_remote_code=False,
                                    model_kwargs={"use_safetensors": True})
    except Exception as exc:  # transformers raises many types for a broken model folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model '{name}' could not be loaded from {path} ({first}); check that it is a "
                         "sentence-transformers or HF encoder directory with safetensors weights") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def is_cross_encoder_dir(path: str) -> bool:
    """A saved model with a sequence-classification head (a reranker), judged from its config.json."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any("ForSequenceClassification" in a for a in architectures)


def load_cross_encoder(name: str, placement: Placement, new_head: bool = False):
    """A sentence-transformers CrossEncoder; `new_head` allows starting from a plain encoder (for training)."""
    from sentence_transformers import CrossEncoder

    path = resolve_model(name)
    if not new_head and not is_cross_encoder_dir(path) and (Path(path) / "config.json").is_file():
        raise ModelError(f"model '{name}' is an embedding model, not a cross-encoder (no classification head); "
                         "use it as dense:MODEL, or train a reranker with `ragtune train rerank`")
    try:
        model = CrossEncoder(path, num_labels=1, device=placement.device, trust_remote_code=False,
                             model_kwargs={"use_safetensors": True})
    except Exception as exc:  # transformers raises many types for a broken model folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cross-encoder '{name}' could not be loaded from {path} ({first}); check that it is a "
                         "CrossEncoder or HF sequence-classification directory with safetensors weights") from None
    return model
