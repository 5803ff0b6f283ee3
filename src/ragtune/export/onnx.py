"""`ragtune export onnx|openvino`: an embedder or cross-encoder as ONNX (fused fp32, and dynamic int8) or as OpenVINO
IR (fp32 and static int8, export/openvino.py), kept only if the run's own evaluation split says it is as good as torch.

The folder written is a copy of the model (it still loads in torch) plus `onnx/` (or `openvino/`):

    onnx/model.onnx                     fp32, attention and layer norms fused by ONNX Runtime's transformer optimizer
    onnx/model_qint8_<config>.onnx      dynamic int8: per-channel int8 weights, activations quantized per call
    onnx/ragtune_export.json            what was measured, and the file ragtune runs (`chosen`)

The graph is traced from the model loaded with eager attention: with SDPA the optimizer cannot recognise the
attention block, and the unfused graph ran 1.5x slower than torch. Per-channel weight scales matter: per-tensor int8
left MiniLM's document vectors at a mean cosine of 0.937 to fp32's, per-channel at 0.995 (benchmarks/onnx_int8.py).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ragtune.errors import ModelError, OutputError, RagtuneError
from ragtune.export.gate import Gate
from ragtune.models.onnx_backend import EXPORT_RECORD, RUNTIMES, Exported
from ragtune.train.model_card import append_export_card
from ragtune.utils import output_folder

log = logging.getLogger(__name__)

QUANTIZE = {"onnx": ("auto", "none", "avx512_vnni", "avx512", "avx2", "arm64"), "openvino": ("auto", "none", "int8")}
# Without VNNI, x86 int8 kernels multiply u8 by s8 into 16 bits, which can saturate: ONNX Runtime advises 7-bit
# weights (reduce_range) there.
REDUCE_RANGE = {"avx512_vnni": False, "avx512": True, "avx2": True, "arm64": False}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PLAIN = "model.onnx"


class ExportRefused(RagtuneError):
    """The exported model scored too far below torch on the evaluation split."""

    exit_code = 1


def cpu_quantize_config() -> str:
    """The int8 configuration for this CPU: arm64, avx512_vnni, avx512 or avx2."""
    from ragtune.models.cpu import cpu_features

    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    features = cpu_features()
    return "avx512_vnni" if features["AVX512"] and features["VNNI"] else "avx512" if features["AVX512"] else "avx2"


def int8_name(config: str) -> str:
    return f"model_qint8_{config}.onnx"


@dataclass
class Row:
    """One way of running the model, measured on the evaluation split."""

    name: str
    file: str | None  # the exported file, None for torch
    metric: float
    per_second: float  # texts (embedder) or pairs (cross-encoder) per second, over the whole evaluation
    drop: float = 0.0
    passed: bool = True
    precision: str | None = None  # OpenVINO's inference precision for the file


def load_kind(folder: Path, kind: str, **model_kwargs):
    """The saved embedder ('embed') or cross-encoder ('rerank') in `folder`, in torch fp32 on CPU."""
    from ragtune.models.device import choose_placement
    from ragtune.models.load import load_cross_encoder, load_embedder

    loader = load_cross_encoder if kind == "rerank" else load_embedder
    return loader(str(folder), choose_placement("cpu", "fp32"), model_kwargs=model_kwargs)


def trace(folder: Path, kind: str, path: Path) -> None:
    """Write the model's transformer as an ONNX graph, batch and sequence length dynamic."""
    import torch

    model = load_kind(folder, kind, attn_implementation="eager")
    encoder = model[0].model.eval()
    sample = model.tokenizer(["a short example", "and a second, longer example sentence"], padding=True,
                             return_tensors="pt")
    names = [n for n in INPUTS if n in sample]
    output = "logits" if kind == "rerank" else "last_hidden_state"

    class Named(torch.nn.Module):  # positional inputs for the tracer, named ones for the encoder
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, *inputs):
            return getattr(self.encoder(**dict(zip(names, inputs))), output)

    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    axes[output] = {0: "batch"} if kind == "rerank" else {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on mask code that is constant for these inputs
        torch.onnx.export(Named(), tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=17, dynamo=False)


def fuse(path: Path, config) -> None:
    """Fuse attention, embeddings and layer norms in place with ONNX Runtime's transformer optimizer (BERT-style
    encoders); a graph it cannot fuse is left as traced."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        optimized = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        optimized.save_model_to_file(str(path))
    except Exception as exc:  # noqa: BLE001 (the optimizer raises many types on graphs it does not know)
        log.warning("ONNX Runtime's optimizer could not fuse %s (%s): kept as traced", path, exc)


def quantize(plain: Path, config: str) -> Path:
    """Dynamic int8 of `plain`, per-channel weights, written beside it."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = plain.with_name(int8_name(config))
    with quiet_root_logger():  # its advice to pre-process concerns static quantization
        quantize_dynamic(str(plain), str(out), per_channel=True, reduce_range=REDUCE_RANGE[config],
                         weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return out


@contextlib.contextmanager
def quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def measure(name: str, file: str | None, model, placement, gate: Gate) -> Row:
    gate.warm(model, placement)
    start = time.perf_counter()
    metrics = gate.evaluate(model, placement)
    seconds = time.perf_counter() - start
    row = Row(name, file, round(float(metrics[gate.primary_metric]), 4), round(gate.units / seconds, 1))
    log.info("%s: %s %.4f, %.1f %s/s", name, gate.primary_metric, row.metric, row.per_second, gate.unit)
    return row


def export(source: Path, out: Path, kind: str, build_gate: Callable[[], Gate], runtime: str = "onnx",
           quantize_as: str = "auto", max_drop: float = 0.005, overwrite: bool = False,
           note: Callable[[str], None] = log.info) -> dict:
    """Export `source` (a saved embedder, kind 'embed', or cross-encoder, 'rerank') for `runtime` (onnx or
    openvino) to `out`, gate it, and return the record written to out/RUNTIME/ragtune_export.json. `build_gate`
    reads the evaluation data once `out` is known to be free. The export is written beside `out` and moved into place
    only when it passed: ExportRefused (no exported file within `max_drop` of torch fp32's primary metric) leaves
    `out` as it was."""
    versions = _require(runtime)
    out = Path(out).resolve()
    source = Path(source).resolve()
    if source == out or source.is_relative_to(out) or (out / "config.yaml").is_file() or not out.name:
        raise OutputError(f"{out}: holds the model or its run (replacing it would delete them); choose a new "
                          "folder for --out")
    if out.is_symlink() or out.is_file() or (out.is_dir() and any(out.iterdir()) and not overwrite):
        raise OutputError(f"{out}: exists; pass --overwrite to replace it or choose another --out")
    output_folder(out)  # a file on the way is refused in one line
    with contextlib.suppress(OSError):  # --out models/x makes models/
        out.parent.mkdir(parents=True, exist_ok=True)
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise OutputError(f"{out.parent}: not a folder this user can write; choose another --out")
    gate = build_gate()
    staging, old = out.with_name(out.name + ".partial"), out.with_name(out.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("checkpoint-*", *RUNTIMES, "*.partial"))
        (staging / runtime).mkdir()
        record = _export_and_gate(source, staging, kind, gate, runtime, quantize_as, max_drop, note)
        record.update(versions)
        (staging / runtime / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():  # swapped by renames: an interrupted swap leaves the old export whole beside it
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    append_export_card(out, record)
    return record


def _require(runtime: str) -> dict[str, str]:
    """The runtime's version by package name (both exports trace through `onnx`); one line naming the install when a
    package is missing."""
    packages = ("onnx", "onnxruntime") if runtime == "onnx" else ("onnx", "openvino", "nncf")
    try:
        modules = [__import__(name) for name in packages]
    except ImportError as exc:
        raise ModelError(f"ragtune export {runtime} needs {', '.join(packages)} ({exc.name or 'one'} is missing): "
                         f"pip install 'ragtune[{runtime}]'") from None
    return {name: module.__version__ for name, module in zip(packages[1:], modules[1:])}


def _onnx_files(out: Path, kind: str, quantize_as: str, note: Callable[[str], None]) -> dict[str, Exported]:
    """The fused fp32 graph and its dynamic int8 copy, by row name."""
    folder = out / "onnx"
    plain = folder / PLAIN
    note("tracing the transformer to ONNX (eager attention) and fusing it")
    trace(out, kind, plain)
    fuse(plain, load_kind(out, kind)[0].model.config)
    files = {"onnx fp32": Exported("onnx", PLAIN)} if quantize_as in ("auto", "none") else {}  # one int8 asked
    if quantize_as != "none":
        config = cpu_quantize_config() if quantize_as == "auto" else quantize_as
        note(f"quantizing to int8 ({config}: per-channel weights{', 7-bit' if REDUCE_RANGE[config] else ''})")
        files[f"onnx int8 {config}"] = Exported("onnx", quantize(plain, config).name)
    return files


def _openvino_files(out: Path, kind: str, quantize_as: str, gate: Gate,
                    note: Callable[[str], None]) -> tuple[dict[str, Exported], str | None]:
    """The IR at this CPU's default precision and its static int8 copy, by row name, and what calibrated the int8
    copy. With --quantize int8 the plain IR, never measured, is removed once quantized."""
    from ragtune.export import openvino

    folder = out / "openvino"
    traced = folder / PLAIN
    note("tracing the transformer to ONNX (eager attention) and converting it to OpenVINO IR")
    trace(out, kind, traced)
    plain = openvino.convert(traced, folder / openvino.PLAIN)
    traced.unlink()
    precision = openvino.cpu_precisions()[0]
    files = {f"openvino {precision}": Exported("openvino", plain.name, precision)} if quantize_as != "int8" else {}
    if quantize_as == "none":
        return files, None
    calibration, source = gate.calibrate()
    note(f"quantizing to static int8 with NNCF, calibrated on {len(calibration)} {source}")
    int8 = openvino.quantize_static(plain, load_kind(out, kind), calibration)
    files[f"openvino int8 static ({precision})"] = Exported("openvino", int8.name, precision)
    if quantize_as == "int8":
        _remove(folder, plain.name)
    return files, source


def _export_and_gate(source: Path, out: Path, kind: str, gate: Gate, runtime: str, quantize_as: str,
                     max_drop: float, note: Callable[[str], None]) -> dict:
    import torch

    from ragtune.eval.report import greater_is_better
    from ragtune.models.cpu import cpu_summary
    from ragtune.models.device import choose_placement, settle
    from ragtune.models.onnx_backend import attach

    files, calibration = (_onnx_files(out, kind, quantize_as, note), None) if runtime == "onnx" else \
        _openvino_files(out, kind, quantize_as, gate, note)
    reference_model = load_kind(out, kind)
    fp32 = choose_placement("cpu", "fp32")
    note(f"evaluating torch fp32 on {gate.split} ({gate.units} {gate.unit})")
    rows = [measure("torch fp32", None, reference_model, fp32, gate)]
    reference = rows[0].metric
    auto = choose_placement("cpu", "auto")
    settled = settle(auto, reference_model, "rerank" if kind == "rerank" else "encode")
    sign = 1 if greater_is_better(gate.primary_metric) else -1

    def judged(name: str, exported: Exported | None, model, placement) -> Row:
        row = measure(name, exported and exported.file, model, placement, gate)
        row.precision = exported and exported.precision
        row.drop = round(sign * (reference - row.metric), 4)
        row.passed = row.drop <= max_drop
        rows.append(row)
        return row

    if settled.precision != "fp32":
        note(f"evaluating torch {settled.precision} ({settled.reason})")
        judged(f"torch {settled.precision}", None, reference_model, settled)
    for name, exported in files.items():
        note(f"evaluating {name}")
        row = judged(name, exported, attach(load_kind(out, kind), out, exported), fp32)
        if not row.passed and exported.precision not in (None, "f32"):  # OpenVINO's reduced precision lost too much
            note(f"{name} fell {row.drop:.4f}: evaluating it at f32")
            at_f32 = Exported(exported.runtime, exported.file, "f32")
            judged(name.replace(exported.precision, "f32"), at_f32, attach(load_kind(out, kind), out, at_f32), fp32)
    exported_rows = [r for r in rows if r.file]
    passed = [r for r in exported_rows if r.passed]
    for file in {r.file for r in exported_rows} - {r.file for r in passed} - {PLAIN}:
        _remove(out / runtime, file)
    if not passed:
        worst = min(exported_rows, key=lambda r: sign * r.metric)
        raise ExportRefused(
            f"export refused: {gate.primary_metric} on {gate.split} is {worst.metric:.4f} with {worst.name} against "
            f"{reference:.4f} with torch fp32, a drop of {worst.drop:.4f} (more than --max-drop {max_drop}); nothing "
            "was written. Try --quantize none, or a larger --max-drop if that loss is acceptable")
    best = max(passed, key=lambda r: r.per_second)
    torch_best = max((r for r in rows if not r.file and r.passed), key=lambda r: r.per_second)
    chosen = "torch" if quantize_as == "auto" and torch_best.per_second > best.per_second else best.file
    return {"chosen": chosen, "best": best.file, "runtime": runtime, "kind": kind, "source": str(source),
            "quantize": quantize_as, "max_drop": max_drop, "primary_metric": gate.primary_metric, "split": gate.split,
            "unit": gate.unit, "calibration": calibration,
            "rows": [asdict(r) for r in rows], "cpu": cpu_summary(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "measured": datetime.date.today().isoformat()}


def _remove(folder: Path, file: str) -> None:
    """An exported file that did not pass, with an IR's weights beside it."""
    (folder / file).unlink(missing_ok=True)
    if file.endswith(".xml"):
        (folder / file).with_suffix(".bin").unlink(missing_ok=True)
