"""The OpenVINO side of `ragtune export openvino`: the traced graph as OpenVINO IR, and its static int8 copy.

    openvino/openvino_model.xml (+ .bin)                   fp32 weights; OpenVINO runs it at the CPU's default
                                                          precision (bf16 with AVX512-BF16 or AMX, else f32)
    openvino/openvino_model_qint8_quantized.xml (+ .bin)   static int8 by NNCF: weights and activations int8, the
                                                          activation ranges calibrated on the run's own texts

The names are the ones sentence-transformers' `backend="openvino"` reads. The IR is converted from the traced,
unfused ONNX graph: OpenVINO fuses attention itself, and its int8 ran faster from the unfused graph (78 against 71
texts/s for MiniLM on CPU-F).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from ragtune.models.onnx_backend import runtime_feed

PLAIN = "openvino_model.xml"
INT8 = "openvino_model_qint8_quantized.xml"
CALIBRATION_BATCH = 8


def convert(traced: Path, out: Path) -> Path:
    """The ONNX graph `traced` as OpenVINO IR at `out` (.xml beside its .bin), weights kept in fp32."""
    import openvino as ov

    ov.save_model(ov.Core().read_model(str(traced)), str(out), compress_to_fp16=False)
    return out


def quantize_static(plain: Path, model, calibration: list) -> Path:
    """Static int8 of the IR `plain`, its activation ranges measured on `calibration` (texts for an embedder,
    (query, document) pairs for a cross-encoder) tokenized as `model` (the sentence-transformers object) does."""
    import nncf
    import openvino as ov

    from ragtune.export.onnx import quiet_root_logger

    ir = ov.Core().read_model(str(plain))
    names = [port.get_any_name() for port in ir.inputs]
    batches = [runtime_feed(names, model.preprocess(calibration[i:i + CALIBRATION_BATCH]))
               for i in range(0, len(calibration), CALIBRATION_BATCH)]
    nncf_log = logging.getLogger("nncf")
    level, streams = nncf_log.level, [h for h in nncf_log.handlers if isinstance(h, logging.StreamHandler)]
    kept = [h.setStream(sys.stderr) for h in streams]  # its handler holds stdout, which `--json` keeps for the record
    nncf_log.setLevel(logging.ERROR)
    try:  # and NNCF draws its progress bars on stdout
        with quiet_root_logger(), contextlib.redirect_stdout(sys.stderr):
            quantized = nncf.quantize(ir, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(batches), preset=nncf.QuantizationPreset.MIXED)
    finally:
        nncf_log.setLevel(level)
        for handler, stream in zip(streams, kept):
            handler.setStream(stream)
    out = plain.with_name(INT8)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def cpu_precisions() -> list[str]:
    """The inference precisions to try on this CPU, OpenVINO's default first: ['bf16', 'f32'] or ['f32']."""
    import openvino as ov

    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    return [default] + (["f32"] if default != "f32" else [])
