"""`ragtune train embed` under `torchrun --nproc_per_node 2` on CPU (gloo): rank 0 alone logs and saves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import tiny_train_overrides

pytestmark = pytest.mark.slow


def test_torchrun_two_cpu_processes(tiny_embedder, pairs_file, tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    cmd = [*torchrun.split(), "--nproc_per_node", "2", "--master_port", "29533", "-m", "ragtune", "-q", "train",
           "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir), "--allow-regression"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "final" / "modules.json").exists()
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in logged if "loss" in m]
    assert steps == sorted(set(steps)), "each step is logged once, by rank 0"
    assert json.loads((run_dir / "progress.json").read_text())["step"] == 4
