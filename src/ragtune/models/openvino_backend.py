"""An OpenVINO compiled model standing in for an HF encoder (see models/onnx_backend.py for how it is attached).

OpenVINO compiles the IR that `ragtune export openvino` wrote for this CPU. Its default inference precision is bf16
where the CPU has AVX512-BF16 or AMX and f32 elsewhere; ragtune compiles at the precision the export's quality gate
measured, so what runs is what was gated.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from ragtune.models.onnx_backend import OnnxOutput, runtime_feed


def compile_ir(path: Path | str, threads: int | None = None, precision: str | None = None):
    """`path` (an IR .xml or an .onnx file) compiled for the CPU, tuned for latency on `threads` threads."""
    import openvino as ov

    properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    if precision:
        properties["INFERENCE_PRECISION_HINT"] = precision
    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), "CPU", properties)


def inference_precision(compiled) -> str:
    """The precision OpenVINO runs `compiled` at: 'bf16', 'f16' or 'f32'."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


class OpenVinoTransformer(torch.nn.Module):
    """Keyword inputs in, the graph's first output out, as a torch tensor; the HF `config` is kept for
    sentence-transformers. Each thread has its own infer request, so concurrent callers (the server's worker
    threads) share one compiled model safely."""

    def __init__(self, path: Path, config, threads: int | None = None, precision: str | None = None):
        super().__init__()
        self.config = config
        self.path = Path(path)
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        self.compiled = compile_ir(path, threads, precision)
        self.precision = inference_precision(self.compiled)
        self.inputs = [port.get_any_name() for port in self.compiled.inputs]
        self.output = self.compiled.outputs[0]
        self.local = threading.local()

    def forward(self, **features) -> OnnxOutput:
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.compiled.create_infer_request()
        result = request.infer(runtime_feed(self.inputs, features))
        out = np.array(result[self.output])  # the request reuses its buffers: copy before the next call
        return OnnxOutput({self.output.get_any_name(): torch.from_numpy(out).to(self.anchor.device)})

    def __deepcopy__(self, memo):  # a compiled model cannot be copied, and needs no reduced-precision copy
        return self
