"""The SciFact ladder, end to end on this machine: train the embedder (its tuned rung is the foundation issue's
quality target, NDCG@10 >= 0.70) and the reranker with the shipped configs,
then evaluate every rung with the shipped ladder config. Target: best rung NDCG@10 >= 0.75 with under 30 minutes
of training in all. Reads ../shared/data/scifact (CC BY-NC; never copied).
Run: python -m benchmarks.scifact_ladder [--reuse embed] [--reuse rerank]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import OUT, write_result

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def ragtune(*args: str) -> float:
    """Run the real CLI in its own process (as users do); return the wall time."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ragtune", *args], check=True, cwd=ROOT)
    return time.perf_counter() - start


def train_seconds(run_dir: Path) -> float:
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(m["train_runtime"] for m in logged if "train_runtime" in m)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reuse", action="append", choices=["embed", "rerank"], default=[],
                        help="reuse runs/scifact-<name> instead of training it again (repeatable)")
    args = parser.parse_args()
    data = f"data.train={SCIFACT}"
    walls = {}
    if "embed" not in args.reuse:
        walls["embed"] = ragtune("-q", "train", "embed", "-c", "configs/embed/scifact.yaml", data, "--overwrite")
    if "rerank" not in args.reuse:
        walls["rerank"] = ragtune("-q", "train", "rerank", "-c", "configs/rerank/scifact.yaml", data, "--overwrite",
                                  "--allow-regression")
    out = OUT / "scifact-ladder"
    walls["ladder_eval"] = ragtune("-q", "eval", "retrieval", "--data", str(SCIFACT), "-c",
                                   "configs/eval/scifact-ladder.yaml", "--tune-fusion", "--tune-split", "train",
                                   "--out", str(out))
    trained = {name: train_seconds(ROOT / "runs" / f"scifact-{name}") for name in ("embed", "rerank")}
    rungs = json.loads((out / "results.json").read_text())["pipelines"]
    for rung in rungs:
        print(f"{rung['metrics']['ndcg@10']:.4f}  {rung['name']}")
    best = max(r["metrics"]["ndcg@10"] for r in rungs)
    total = sum(trained.values())
    print(f"best NDCG@10 {best:.4f} (target 0.75); training {total / 60:.1f} min in all (target < 30)")
    write_result("scifact_ladder", {"train_seconds": trained, "wall_seconds": walls, "best_ndcg@10": best,
                                    "rungs": [{"name": r["name"], "metrics": r["metrics"], "timings": r["timings"],
                                               "fusion": r["fusion"]} for r in rungs]})


if __name__ == "__main__":
    main()
