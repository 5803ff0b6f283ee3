"""Load models by name, turning library failures into one clear ModelError."""

from __future__ import annotations

import logging
from pathlib import Path

from ragtune.errors import ModelError
from ragtune.models.device import Placement
from ragtune.models.onnx_backend import attach, chosen_backend
from ragtune.models.resolve import resolve_model

log = logging.getLogger(__name__)


def _unloadable(what: str, name: str, path: str, exc: Exception, expected: str) -> ModelError:
    """One line for a model folder the library could not load: transformers raises many types for one."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(f"{what} '{name}' could not be loaded from {path} ({first}); check that it is {expected} "
                      "directory with safetensors weights")


def load_embedder(name: str, placement: Placement, max_seq_length: int | None = None, backend: str = "torch",
                  model_kwargs: dict | None = None):
    """A SentenceTransformer on the chosen device; safetensors only, no remote code. `backend` auto, onnx or openvino
    runs an exported folder's transformer in ONNX Runtime or OpenVINO (models/onnx_backend.py); training loads torch.
    `model_kwargs` go to the HF model (say attn_implementation)."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model(name)
    exported = chosen_backend(path, backend, placement.device)
    try:
        model = SentenceTransformer(path, device=placement.device, trust_remote_code=False,
                                    model_kwargs={"use_safetensors": True, **(model_kwargs or {})})
    except Exception as exc:  # noqa: BLE001 - see _unloadable
        raise _unloadable("model", name, path, exc, "a sentence-transformers or HF encoder") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return attach(model, path, exported) if exported else model


def is_cross_encoder_dir(path: str) -> bool:
    """A saved model with a sequence-classification head (a reranker), judged from its config.json."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any("ForSequenceClassification" in a for a in architectures)


def load_cross_encoder(name: str, placement: Placement, new_head: bool = False, backend: str = "torch",
                       model_kwargs: dict | None = None):
    """A sentence-transformers CrossEncoder; `new_head` allows starting from a plain encoder (for training);
    `backend` and `model_kwargs` as for load_embedder."""
    from sentence_transformers import CrossEncoder

    path = resolve_model(name)
    exported = chosen_backend(path, backend, placement.device)
    if not new_head and not is_cross_encoder_dir(path) and (Path(path) / "config.json").is_file():
        raise ModelError(f"model '{name}' is an embedding model, not a cross-encoder (no classification head); "
                         "use it as dense:MODEL, or train a reranker with `ragtune train rerank`")
    try:
        model = CrossEncoder(path, num_labels=1, device=placement.device, trust_remote_code=False,
                             model_kwargs={"use_safetensors": True, **(model_kwargs or {})})
    except Exception as exc:  # noqa: BLE001 - see _unloadable
        raise _unloadable("cross-encoder", name, path, exc, "a CrossEncoder or HF sequence-classification") from None
    return attach(model, path, exported) if exported else model


def is_multivector_dir(path: str) -> bool:
    """A saved late-interaction model: its modules.json ends in a MultiVectorMask (or it is a PyLate/ColBERT one)."""
    import json

    modules = Path(path) / "modules.json"
    if modules.is_file():
        return any("MultiVector" in m.get("type", "") or m.get("type", "").startswith("pylate")
                   for m in json.loads(modules.read_text(encoding="utf-8")))
    config = Path(path) / "config.json"
    return config.is_file() and "HF_ColBERT" in (json.loads(config.read_text(encoding="utf-8"))
                                                  .get("architectures") or [])


def load_multivector(name: str, placement: Placement, new_head: bool = False, dim: int = 128,
                     query_length: int | None = 32, document_length: int | None = None):
    """A sentence-transformers MultiVectorEncoder (ColBERT-style). With `new_head`, a plain encoder (say MiniLM)
    gets a fresh `dim`-wide token projection, the scoring mask and unit-length token vectors, for training."""
    from sentence_transformers import MultiVectorEncoder

    path = resolve_model(name)
    built = is_multivector_dir(path)
    if not built and not new_head:
        raise ModelError(f"model '{name}' is not a late-interaction model (no MultiVectorMask in its modules.json); "
                         "train one with `ragtune train multivector`, or use it as dense:MODEL")
    try:
        if built:
            return MultiVectorEncoder(path, device=placement.device, model_kwargs={"use_safetensors": True})
        from sentence_transformers.base.modules import Normalize, Transformer
        from sentence_transformers.base.modules.dense import Dense
        from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
        from torch import nn

        encoder = Transformer(path, model_kwargs={"use_safetensors": True}, query_length=query_length,
                              document_length=document_length)
        project = Dense(encoder.get_embedding_dimension(), dim, bias=False, activation_function=nn.Identity(),
                        module_input_name="token_embeddings")
        return MultiVectorEncoder(modules=[encoder, project, MultiVectorMask(),
                                           Normalize(module_input_name="token_embeddings")],
                                  device=placement.device)
    except Exception as exc:  # noqa: BLE001 - see _unloadable
        raise _unloadable("late-interaction model", name, path, exc,
                          "a MultiVectorEncoder (or, to train one, an HF encoder)") from None
