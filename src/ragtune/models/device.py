"""Pick the device and precision, and say why."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ragtune.models.cpu import cpu_features


@dataclass(frozen=True)
class Placement:
    device: str  # cuda | mps | cpu
    precision: str  # bf16 | fp16 | fp32
    reason: str
    # precision: auto on a CPU that offers bf16: fp32 until `settle` has measured which is faster for a workload
    measure: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]

    @property
    def encode_batch_size(self) -> int:
        """Texts per encoding batch when the config leaves it open. On CPU small length-sorted batches waste the
        least padding (16 encodes PubMedQA 1.25x faster than 64 with MiniLM on a 2-core fp32 CPU); GPUs want
        wide ones."""
        return 16 if self.device == "cpu" else 128

    @property
    def rerank_batch_size(self) -> int:
        """(query, document) pairs per cross-encoder forward pass when the config leaves it open. Pairs are longer
        than single texts, so CPU batches are smaller still: 8 reranks a BM25 top 100 of SciFact about 1.2x faster
        than 32 with a MiniLM cross-encoder on a 2-core fp32 CPU (activations stay in cache)."""
        return 8 if self.device == "cpu" else 64

    def autocast(self):
        """A context that runs matmuls in the chosen precision (a no-op for fp32)."""
        device_type = "cuda" if self.device == "cuda" else "cpu" if self.device == "cpu" else self.device
        return torch.autocast(device_type=device_type, dtype=self.dtype, enabled=self.precision != "fp32")


# What the CPU offers for the matmuls that matter here, by /proc/cpuinfo flag.


def precisions_offered() -> list[str]:
    """The fixed precisions worth timing on this CPU: fp32, and bf16 where the CPU has it natively."""
    return ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 matmul (AVX512-BF16 or AMX), so autocast speeds things up;
    `RAGTUNE_CPU_BF16=0` says no, so that `precision: auto` stays fp32 in this process and in its children."""
    if os.environ.get("RAGTUNE_CPU_BF16", "").strip() == "0":
        return False
    probe = getattr(torch.backends, "mkldnn", None)
    if probe is not None and hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"):
        try:
            if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return False
        except RuntimeError:
            return False
    features = cpu_features()
    return features["BF16"] or features["AMX"]


def choose_placement(device: str = "auto", precision: str = "auto") -> Placement:
    """Resolve `auto` for device and precision; CUDA bf16 (fp16 on older GPUs), MPS, CPU bf16 where native."""
    from ragtune.config.base import check_placement

    check_placement("--device", device)
    check_placement("--precision", precision)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if precision != "auto":
        return Placement(device, precision, "forced by config")
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return Placement(device, "bf16", "CUDA with bf16 support")
        return Placement(device, "fp16", "CUDA without bf16: fp16")
    if device == "cpu" and cpu_supports_bf16():
        return Placement(device, "fp32", "CPU offers bf16 (AVX512-BF16/AMX): measured per model", measure=True)
    return Placement(device, "fp32", f"{device} without fast bf16")


def settle(placement: Placement, model, workload: str) -> Placement:
    """The placement `model` should run `workload` (train, encode, rerank, generate) with: on a CPU whose `auto` precision is
    still open, the faster of fp32 and bf16 as measured on this model (cached per CPU, torch and model shape);
    otherwise `placement` as it is."""
    if not placement.measure:
        return placement
    from ragtune.models.precision_probe import probe, transformer_of

    verdict = probe(transformer_of(model), workload)
    return Placement(placement.device, verdict.precision, verdict.reason(workload))
