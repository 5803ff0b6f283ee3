"""What this CPU is and which instruction sets it has, from /proc/cpuinfo (no torch)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

CPU_FEATURES = {"AVX2": ("avx2",), "AVX512": ("avx512f",), "VNNI": ("avx512_vnni", "avx_vnni"),
                "BF16": ("avx512_bf16",), "AMX": ("amx_bf16", "amx_tile")}


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo, read once per process (empty where it is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_features() -> dict[str, bool]:
    """Which of AVX2, AVX512, VNNI, AVX512-BF16 and AMX this CPU has (all False where /proc/cpuinfo is absent)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return {name: any(f in flags for f in names) for name, names in CPU_FEATURES.items()}


def cpu_summary() -> str:
    """'Intel(R) Xeon(R) ...: AVX2 AVX512 VNNI BF16 AMX' (the instruction sets it lacks marked with a minus)."""
    return f"{cpu_model()}: " + " ".join(n if has else f"-{n}" for n, has in cpu_features().items())
