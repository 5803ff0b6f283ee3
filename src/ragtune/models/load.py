"""Load models by name, turning library failures into one clear ModelError."""

from __future__ import annotations

import logging

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
