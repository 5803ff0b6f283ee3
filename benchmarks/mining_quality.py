"""Mining quality: the shipped SciFact embedder config with and without its BM25-mined hard negatives, everything
else equal (model, data, epochs, batch, seed); both scored on SciFact test NDCG@10. Target: with > without.
Run: python -m benchmarks.mining_quality   (trains both; reuses runs/scifact-embed when it exists)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def train(run_dir: Path, *overrides: str) -> dict:
    if not (run_dir / "eval_after.json").is_file():
        subprocess.run([sys.executable, "-m", "ragtune", "-q", "train", "embed", "-c", "configs/embed/scifact.yaml",
                        f"data.train={SCIFACT}", f"output.dir={run_dir}", *overrides, "--overwrite",
                        "--allow-regression"], check=True, cwd=ROOT)
    after = json.loads((run_dir / "eval_after.json").read_text())["metrics"]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"ndcg@10": after["ndcg@10"], "train_seconds": next(m["train_runtime"] for m in logged
                                                                if "train_runtime" in m)}


def main() -> None:
    runs = {"with_hard_negatives": train(ROOT / "runs" / "scifact-embed"),
            "without": train(ROOT / "runs" / "scifact-embed-no-negatives", "data.hard_negatives=null")}
    for name, result in runs.items():
        print(f"{name:20s} NDCG@10 {result['ndcg@10']:.4f}  ({result['train_seconds'] / 60:.1f} min training)")
    gain = runs["with_hard_negatives"]["ndcg@10"] - runs["without"]["ndcg@10"]
    print(f"hard negatives: {gain:+.4f} NDCG@10 (target > 0)")
    write_result("mining_quality", {**runs, "gain": round(gain, 4)})


if __name__ == "__main__":
    main()
