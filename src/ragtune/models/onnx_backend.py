"""Run a saved embedder or cross-encoder through ONNX Runtime, inside the same sentence-transformers object.

`ragtune export onnx` writes the ONNX files into `onnx/` of a copy of the model folder, with `ragtune_export.json`
naming the file the quality gate accepted. Loading swaps the HF transformer inside the SentenceTransformer or
CrossEncoder (`model[0].model`) for `OnnxTransformer`, so tokenizing, pooling, prompts, `encode`, `predict` and
ragtune's own batching stay what they are; only the transformer's forward pass runs in ONNX Runtime.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ragtune.errors import ModelError

log = logging.getLogger(__name__)

EXPORT_DIR = "onnx"
EXPORT_RECORD = "ragtune_export.json"
BACKENDS = ("auto", "torch", "onnx")


class OnnxOutput(dict):
    """The session's output by name, readable as `out["logits"]` and as `out.logits`, like a transformers output."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class OnnxTransformer(torch.nn.Module):
    """An ONNX Runtime session standing in for an HF encoder: the keyword inputs it knows in, its output out.

    It keeps the HF `config` (sentence-transformers reads it) and an empty buffer, so that the model's device is
    still known. Inputs arrive as torch tensors, leave as int64 numpy arrays; the output returns as a torch tensor.
    """

    def __init__(self, path: Path, config, threads: int | None = None):
        import onnxruntime as ort

        super().__init__()
        self.config = config
        self.path = Path(path)
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name

    def forward(self, **features) -> OnnxOutput:
        ids = features["input_ids"]
        feed = {}
        for name in self.inputs:
            value = features.get(name)
            if value is None:  # token_type_ids: a single segment
                value = torch.zeros_like(ids) if name == "token_type_ids" else torch.ones_like(ids)
            feed[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
        out = self.session.run([self.output], feed)[0]
        return OnnxOutput({self.output: torch.from_numpy(out).to(self.anchor.device)})

    def __deepcopy__(self, memo):  # a session cannot be copied, and needs no reduced-precision copy
        return self


def export_record(folder: str | Path) -> dict | None:
    """What `ragtune export onnx` recorded in `folder` (None when it holds no export)."""
    path = Path(folder) / EXPORT_DIR / EXPORT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable export record ({exc}); export the model again with "
                         "`ragtune export onnx`") from None
    if not isinstance(record, dict) or not isinstance(record.get("chosen"), str):
        raise ModelError(f"{path}: has no 'chosen' file name; export the model again with `ragtune export onnx`")
    return record


def chosen_backend(folder: str | Path, backend: str, device: str) -> str | None:
    """The ONNX file to run for `backend` (auto, torch or onnx), or None for torch.

    `auto` runs the file the export chose, on CPU, when onnxruntime is installed; `onnx` insists on it."""
    if backend == "torch":
        return None
    record = export_record(folder) if Path(folder).is_dir() else None
    if backend == "onnx" and record is None:
        raise ModelError(f"model '{folder}' holds no ONNX export (no {EXPORT_DIR}/{EXPORT_RECORD}); write one with "
                         "`ragtune export onnx RUN --out DIR`, or set backend: torch")
    if record is None or (backend == "auto" and (record["chosen"] == "torch" or device != "cpu")):
        return None
    name = record["chosen"] if record["chosen"] != "torch" else record.get("best_onnx")
    if not name:
        raise ModelError(f"{folder}: its export kept no ONNX file (torch was faster); set backend: auto or torch")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if backend == "onnx":
            raise ModelError("backend onnx needs ONNX Runtime: pip install onnxruntime") from None
        log.warning("%s holds an ONNX export, but onnxruntime is not installed: running it in torch", folder)
        return None
    return name


def attach_onnx(model, folder: str | Path, file_name: str):
    """Swap `model`'s transformer for an ONNX Runtime session on `folder/onnx/file_name`; tag the model with it."""
    path = Path(folder) / EXPORT_DIR / file_name
    if not path.is_file():
        raise ModelError(f"{path}: missing; export the model again with `ragtune export onnx`")
    transformer = model[0]
    try:
        transformer.model = OnnxTransformer(path, transformer.model.config)
    except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own types for a damaged file)
        raise ModelError(f"{path}: ONNX Runtime could not load it ({str(exc).splitlines()[0]}); export the model "
                         "again with `ragtune export onnx`") from None
    model.ragtune_backend = f"onnx:{file_name}"
    return model


def backend_of(model) -> str:
    """'torch', or 'onnx:FILE' for a model that runs through ONNX Runtime."""
    return getattr(model, "ragtune_backend", "torch")
