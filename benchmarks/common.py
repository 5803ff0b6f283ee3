"""Shared pieces of the benchmarks: the packaged PubMedQA pairs, result writing."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ragtune.data.beir import load_beir
from ragtune.data.embed import examples_from_ir
from ragtune.models.cpu import cpu_summary
from ragtune.progress import Reporter
from ragtune.utils import packaged_resource as packaged

OUT = Path(__file__).resolve().parent / "out"


def pubmedqa_pairs() -> list[dict]:
    """The 1,669 (question, passage) training pairs of the embedded PubMedQA collection."""
    return examples_from_ir(load_beir(packaged("pubmedqa"), "train")).rows


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_summary()}


def write_result(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    payload = {"benchmark": name, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path


class StepTimer(TrainerCallback):
    """Times training from the end of the first step to the end of the last (start-up and warm-up excluded)."""

    def __init__(self):
        self.first = self.last = None
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.last, self.steps = now, self.steps + 1

    def per_second(self, items_per_step: float) -> float:
        return self.steps * items_per_step / (self.last - self.first)


class TimedReporter(Reporter):
    """Hands a StepTimer (and any other callbacks) to a ragtune recipe."""

    def __init__(self, *callbacks):
        self.callbacks = list(callbacks)

    def trainer_callbacks(self):
        return self.callbacks
