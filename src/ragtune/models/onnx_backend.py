"""Run a saved embedder or cross-encoder through ONNX Runtime or OpenVINO, inside the same sentence-transformers
object.

`ragtune export onnx` writes ONNX files into `onnx/` of a copy of the model folder, `ragtune export openvino` writes
OpenVINO IR files into `openvino/`; beside them `ragtune_export.json` names the file the quality gate accepted.
Loading swaps the HF transformer inside the SentenceTransformer or CrossEncoder (`model[0].model`) for
`OnnxTransformer` or `OpenVinoTransformer` (models/openvino_backend.py), so tokenizing, pooling, prompts, `encode`,
`predict` and ragtune's own batching stay what they are; only the transformer's forward pass leaves torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ragtune.errors import ModelError

log = logging.getLogger(__name__)

EXPORT_RECORD = "ragtune_export.json"
RUNTIMES = ("onnx", "openvino")  # each export's folder in the model folder has the runtime's name
BACKENDS = ("auto", "torch", *RUNTIMES)
MODULES = {"onnx": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino")}  # import, pip install
TITLES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass(frozen=True)
class Exported:
    """The exported file ragtune runs: its runtime (onnx or openvino), its name in the runtime's folder, and for
    OpenVINO the inference precision the gate measured it at."""

    runtime: str
    file: str
    precision: str | None = None


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
        out = self.session.run([self.output], runtime_feed(self.inputs, features))[0]
        return OnnxOutput({self.output: torch.from_numpy(out).to(self.anchor.device)})

    def __deepcopy__(self, memo):  # a session cannot be copied, and needs no reduced-precision copy
        return self


def runtime_feed(names: list[str], features: dict) -> dict[str, np.ndarray]:
    """The tokenizer's torch tensors as the int64 numpy arrays an exported graph takes, by input name; an input the
    tokenizer did not give is filled in (token_type_ids: one segment; attention_mask: every token)."""
    ids = features["input_ids"]
    feed = {}
    for name in names:
        value = features.get(name)
        if value is None:
            value = torch.zeros_like(ids) if name == "token_type_ids" else torch.ones_like(ids)
        feed[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
    return feed


def export_record(folder: str | Path) -> dict | None:
    """What `ragtune export onnx|openvino` recorded in `folder` (None when it holds no export); its `runtime` says
    which folder its files are in."""
    for runtime in RUNTIMES:
        path = Path(folder) / runtime / EXPORT_RECORD
        if path.is_file():
            break
    else:
        return None
    again = f"export the model again with `ragtune export {runtime}`"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable export record ({exc}); {again}") from None
    if not isinstance(record, dict) or not isinstance(record.get("chosen"), str):
        raise ModelError(f"{path}: has no 'chosen' file name; {again}")
    if record.setdefault("runtime", "onnx") != runtime or not isinstance(record.get("rows", []), list):
        raise ModelError(f"{path}: its runtime or rows are not what ragtune writes; {again}")
    return record


def chosen_backend(folder: str | Path, backend: str, device: str) -> Exported | None:
    """The exported file to run for `backend` (auto, torch, onnx or openvino), or None for torch.

    `auto` runs the file the export chose, on CPU, when its runtime is installed; `onnx` and `openvino` insist on
    an export of that runtime."""
    if backend == "torch":
        return None
    record = export_record(folder) if Path(folder).is_dir() else None
    if backend != "auto" and record is None:
        raise ModelError(f"model '{folder}' holds no {backend} export (no {backend}/{EXPORT_RECORD}); write one with "
                         f"`ragtune export {backend} RUN --out DIR`, or set backend: torch")
    if backend != "auto" and record["runtime"] != backend:
        raise ModelError(f"model '{folder}' holds an {record['runtime']} export, not an {backend} one; set backend: "
                         f"auto or {record['runtime']}, or write one with `ragtune export {backend} RUN --out DIR`")
    if record is None or (backend == "auto" and (record["chosen"] == "torch" or device != "cpu")):
        return None
    runtime = record["runtime"]
    name = record["chosen"] if record["chosen"] != "torch" else record.get("best", record.get("best_onnx"))
    if not name:
        raise ModelError(f"{folder}: its export kept no {runtime} file (torch was faster); set backend: auto or "
                         "torch")
    module, install = MODULES[runtime]
    try:
        __import__(module)
    except ImportError:
        if backend != "auto":
            raise ModelError(f"backend {runtime} needs {module}: pip install {install}") from None
        log.warning("%s holds an %s export, but %s is not installed: running it in torch", folder, runtime, module)
        return None
    precision = next((row.get("precision") for row in record.get("rows", [])  # the row of the file that passed
                      if isinstance(row, dict) and row.get("file") == name and row.get("passed")), None)
    return Exported(runtime, name, precision)


def attach(model, folder: str | Path, exported: Exported):
    """Swap `model`'s transformer for the exported file's runtime (ONNX Runtime or OpenVINO); tag the model."""
    from ragtune.models.openvino_backend import OpenVinoTransformer

    path = Path(folder) / exported.runtime / exported.file
    again = f"export the model again with `ragtune export {exported.runtime}`"
    if not path.is_file():
        raise ModelError(f"{path}: missing; {again}")
    transformer = model[0]
    try:
        config = transformer.model.config
        transformer.model = OpenVinoTransformer(path, config, precision=exported.precision) \
            if exported.runtime == "openvino" else OnnxTransformer(path, config)
    except Exception as exc:  # noqa: BLE001 (both runtimes raise their own types for a damaged file)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: {TITLES[exported.runtime]} could not load it ({first}); {again}") from None
    model.ragtune_backend = f"{exported.runtime}:{exported.file}"
    return model


def backend_of(model) -> str:
    """'torch', or 'onnx:FILE' / 'openvino:FILE' for a model that runs through an exported file."""
    return getattr(model, "ragtune_backend", "torch")
