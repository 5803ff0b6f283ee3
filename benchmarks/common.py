"""Shared pieces of the benchmarks: the packaged PubMedQA pairs, result writing."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from ragtune.cli.quickstart_cmd import packaged
from ragtune.data.beir import load_beir
from ragtune.data.embed import examples_from_ir

OUT = Path(__file__).resolve().parent / "out"


def pubmedqa_pairs() -> list[dict]:
    """The 1,669 (question, passage) training pairs of the embedded PubMedQA collection."""
    return examples_from_ir(load_beir(packaged("pubmedqa"), "train")).rows


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}


def write_result(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    payload = {"benchmark": name, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path
