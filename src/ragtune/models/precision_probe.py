"""`precision: auto` on a CPU, decided by measurement: time the actual model in fp32 and bf16, keep the faster.

CPU flags do not tell: on a Xeon with AVX512-BF16 but no AMX, bf16 encoding, training and reranking ran 1.3-1.5x
*slower* than fp32, while AMX makes bf16 several times faster. So the first time a model shape meets a workload on a
machine, a few passes of that model are timed in each precision; the verdict is cached in ragtune's cache folder,
keyed by the CPU model, the thread count, the torch version, the workload and the model's shape.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ragtune.models.cpu import cpu_model

log = logging.getLogger(__name__)

# bf16 must beat fp32 by this factor to be chosen: below it the two are within timing noise, and fp32 is exact.
MIN_SPEEDUP = 1.05
REPEATS = 3
# (batch, tokens) of the probe's synthetic input, close to what each workload runs on a CPU.
SHAPES = {"train": (8, 96), "encode": (16, 128), "rerank": (8, 192), "generate": (4, 384)}
_VERDICTS: dict[str, Verdict] = {}


@dataclass(frozen=True)
class Verdict:
    precision: str  # fp32 | bf16
    fp32_s: float  # median seconds of one probe pass
    bf16_s: float
    measured: str  # ISO date
    cached: bool = False

    @property
    def speedup(self) -> float:
        """How many times faster bf16 ran than fp32 (below 1: slower)."""
        return self.fp32_s / self.bf16_s if self.bf16_s > 0 else 0.0

    def reason(self, workload: str) -> str:
        where = "cached verdict" if self.cached else "measured"
        if self.precision == "bf16":
            return f"bf16: {self.speedup:.2f}x faster than fp32 here for {workload} ({where} {self.measured})"
        return (f"fp32: bf16 ran at {self.speedup:.2f}x of fp32's speed here for {workload}, below the "
                f"{MIN_SPEEDUP}x that would pick it ({where} {self.measured})")


def transformer_of(model) -> torch.nn.Module:
    """The HF transformer inside a SentenceTransformer / CrossEncoder (or the module itself)."""
    first = model[0] if isinstance(model, torch.nn.Sequential) else model
    return getattr(first, "auto_model", first)


def model_shape(module: torch.nn.Module) -> str:
    config = getattr(module, "config", None)
    fields = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    return "/".join(str(getattr(config, f, "?")) for f in fields) if config is not None else type(module).__name__


def cache_key(module: torch.nn.Module, workload: str) -> str:
    return "|".join([cpu_model(), f"{torch.get_num_threads()} threads", f"torch {torch.__version__}", workload,
                     model_shape(module)])


def _cache_file() -> Path:
    from ragtune.utils import cache_root

    return cache_root() / "precision.json"


def _read_cache() -> dict:
    try:
        found = json.loads(_cache_file().read_text(encoding="utf-8"))
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):  # no cache yet, or a damaged one: measure again
        return {}


def _write_cache(key: str, verdict: Verdict) -> None:
    from ragtune.utils import write_json

    entries = _read_cache()
    entries[key] = {"precision": verdict.precision, "fp32_s": verdict.fp32_s, "bf16_s": verdict.bf16_s,
                    "measured": verdict.measured}
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json(_cache_file(), entries)
    except OSError as exc:  # a read-only cache folder costs a probe next time, nothing else
        log.warning("could not cache the precision verdict in %s (%s)", _cache_file(), exc)


def _inputs(module: torch.nn.Module, workload: str) -> dict[str, torch.Tensor]:
    config = module.config
    batch, tokens = SHAPES[workload]
    tokens = min(tokens, getattr(config, "max_position_embeddings", tokens) or tokens)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, max(2, config.vocab_size), (batch, tokens), generator=generator)
    inputs = {"input_ids": ids.to(module.device), "attention_mask": torch.ones_like(ids).to(module.device)}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = inputs["input_ids"]
    return inputs


def _output_tensor(output) -> torch.Tensor:
    for name in ("logits", "last_hidden_state"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    return output[0]


def model_timer(module: torch.nn.Module, workload: str) -> Callable[[str], float]:
    """A function that runs one probe pass of `module` in a precision and returns its seconds: a forward pass for
    encode/rerank/generate (on a bf16 copy, as inference runs), forward and backward under autocast for training."""
    import copy

    inputs = _inputs(module, workload)
    copies: dict[str, torch.nn.Module] = {}

    def run(precision: str) -> float:
        start = time.perf_counter()
        if workload == "train":
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = _output_tensor(module(**inputs))
            if out.requires_grad:  # a fully frozen model has no backward pass to time
                out.float().mean().backward()
                module.zero_grad(set_to_none=True)
        else:
            if precision not in copies:
                copies[precision] = module if precision == "fp32" else copy.deepcopy(module).to(torch.bfloat16)
            with torch.inference_mode():
                copies[precision](**inputs)
        return time.perf_counter() - start

    return run


def measure(run: Callable[[str], float], repeats: int = REPEATS) -> Verdict:
    """Median seconds per pass in fp32 and bf16 (after one warm-up pass each), interleaved so that background load
    hits both alike."""
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision in times:
        run(precision)
    for _ in range(repeats):
        for precision in times:
            times[precision].append(run(precision))
    fp32, bf16 = (sorted(times[p])[len(times[p]) // 2] for p in ("fp32", "bf16"))
    choice = "bf16" if fp32 / max(bf16, 1e-12) >= MIN_SPEEDUP else "fp32"
    return Verdict(choice, round(fp32, 6), round(bf16, 6), datetime.date.today().isoformat())


def probe(module: torch.nn.Module, workload: str, timer: Callable[[str], float] | None = None) -> Verdict:
    """The precision `workload` should run `module` in on this CPU: the cached verdict, else a fresh measurement
    (`timer` replaces the real passes in tests)."""
    key = cache_key(module, workload)
    if key in _VERDICTS:
        return _VERDICTS[key]
    entry = _read_cache().get(key)
    if isinstance(entry, dict) and entry.get("precision") in ("fp32", "bf16"):
        try:
            verdict = Verdict(entry["precision"], float(entry["fp32_s"]), float(entry["bf16_s"]),
                              str(entry["measured"]), cached=True)
        except (KeyError, TypeError, ValueError):
            verdict = None
        if verdict is not None:
            _VERDICTS[key] = verdict
            return verdict
    was_training = module.training
    module.train(workload == "train")
    try:
        verdict = measure(timer or model_timer(module, workload))
    finally:
        module.train(was_training)
    log.info("precision probe, %s: fp32 %.4f s, bf16 %.4f s per pass -> %s", key, verdict.fp32_s, verdict.bf16_s,
             verdict.precision)
    _write_cache(key, verdict)
    _VERDICTS[key] = verdict
    return verdict
