"""Quality target: fine-tune all-MiniLM-L6-v2 on SciFact train with the shipped config, evaluate on SciFact test.

Target NDCG@10 >= 0.70 (zero-shot: 0.645). Reads ../shared/data/scifact (CC BY-NC; never copied).
Run: python benchmarks/scifact_quality.py [key=value ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.common import OUT, write_result
from ragtune.config import load_config
from ragtune.train.embed import train_embed

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    cfg = load_config("embed", ROOT / "configs" / "embed" / "scifact.yaml",
                      [f"data.train={ROOT.parent / 'shared' / 'data' / 'scifact'}",
                       f"output.dir={OUT / 'scifact-embed'}", *sys.argv[1:]])
    start = time.perf_counter()
    result = train_embed(cfg, overwrite=True)
    wall = time.perf_counter() - start
    c = result.comparison
    print(f"SciFact test NDCG@10: {c.before['ndcg@10']:.4f} -> {c.after['ndcg@10']:.4f} "
          f"(target 0.70); training {result.train_seconds:.0f} s, whole run {wall:.0f} s")
    write_result("scifact_quality", {"overrides": sys.argv[1:], "before": c.before, "after": c.after,
                                     "train_seconds": round(result.train_seconds, 1), "wall_seconds": round(wall, 1),
                                     "train_examples": result.train_examples})


if __name__ == "__main__":
    main()
