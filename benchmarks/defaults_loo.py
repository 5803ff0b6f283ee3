"""Defaults on a domain they were not chosen on: what a new user gets from `ragtune train embed data.train=PAIRS`.

The domain's training split is written out as plain (query, document) pairs, with no eval file, exactly as a user
who has only labelled pairs would run it: the run carves its own seeded dev split from the training queries, picks
its best checkpoint there (the base model included) and writes final/. This script then scores final/ and the
zero-shot model on the domain's test split against its whole corpus, with a paired t-test per query (ranx) against
zero-shot. Recipes:
- `old`: the defaults before issue 19 (MNRL, no mined negatives);
- `new`: today's defaults, no overrides;
- `scifact`: the hand-tuned SciFact recipe (configs/embed/scifact.yaml's loss, lr, mining and dropout).
- `new-lr2e-5`: the new defaults as first chosen (on PubMedQA), before SciFact showed lr 2e-5 too low for them;
  `gist-lr2e-5`: that choice's loss alone, without mined negatives.
Run: python -m benchmarks.defaults_loo --domain pubmedqa|scifact [--recipes old,new,scifact,new-lr2e-5,gist-lr2e-5]
     [--epochs N] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = {"scifact": ROOT.parent / "shared" / "data" / "scifact"}
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RECIPES = {
    "old": ["loss=mnrl", "data.hard_negatives=null", "train.learning_rate=2e-5"],
    "new": [],
    "scifact": ["loss=mnrl", "train.learning_rate=5e-5", "model.dropout=0", "model.max_seq_length=256",
                "data.hard_negatives={first_stage: bm25, num_negatives: 1, range_min: 0, range_max: 20}"],
    # the first choice of new defaults (lr 2e-5), and its loss alone (no mining)
    "new-lr2e-5": ["train.learning_rate=2e-5"],
    "gist-lr2e-5": ["data.hard_negatives=null", "train.learning_rate=2e-5"],
}


def domain_dir(name: str) -> Path:
    if name == "pubmedqa":
        from ragtune.utils import packaged_resource as packaged

        return Path(packaged("pubmedqa"))
    return DOMAINS[name]


def write_pairs(beir: Path, out: Path, queries: int | None = None, seed: int = 0) -> int:
    """The training split's (query, document) pairs as a plain pairs file; with `queries`, a seeded sample of that
    many training queries and all their pairs."""
    from ragtune.data.beir import load_beir
    from ragtune.data.embed import examples_from_ir, sample_queries

    rows = examples_from_ir(sample_queries(load_beir(beir, "train"), queries, seed)).rows
    out.write_text("".join(json.dumps({"query": r["anchor"], "document": r["positive"]}) + "\n" for r in rows))
    return len(rows)


def train(recipe: str, pairs: Path, run_dir: Path, extra: list[str], reuse: bool) -> dict:
    start = time.perf_counter()
    done = reuse and (run_dir / "eval_after.json").is_file()
    command = [sys.executable, "-m", "ragtune", "-q", "train", "embed", f"data.train={pairs}", f"output.dir={run_dir}",
               *RECIPES[recipe], *extra, "--overwrite", "--allow-regression"]
    proc = subprocess.CompletedProcess([], 0) if done else subprocess.run(command, cwd=ROOT, capture_output=True,
                                                                          text=True)
    if proc.returncode:
        raise SystemExit(f"{recipe}: train embed failed: {proc.stderr[-2000:]}")
    after = json.loads((run_dir / "eval_after.json").read_text())
    before = json.loads((run_dir / "eval_before.json").read_text())["metrics"]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    wall = json.loads((run_dir / "wall.json").read_text())["seconds"] if done else time.perf_counter() - start
    (run_dir / "wall.json").write_text(json.dumps({"seconds": wall}))
    return {"dev_before": before["ndcg@10"], "dev_after": after["metrics"]["ndcg@10"],
            "kept_base": after.get("kept_base", False), "wall_seconds": round(wall, 1),
            "train_seconds": next((m["train_runtime"] for m in logged if "train_runtime" in m), None)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", choices=["pubmedqa", "scifact"], required=True)
    parser.add_argument("--recipes", default="old,new,scifact,new-lr2e-5,gist-lr2e-5")
    parser.add_argument("--epochs", type=float, default=None, help="train.num_train_epochs for every recipe")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "loo"))
    parser.add_argument("--reuse", action="store_true", help="score runs already trained in --runs as they are")
    args = parser.parse_args()
    from ragtune.data.beir import load_beir
    from ragtune.eval.retrieval import evaluate_pipelines

    beir, out = domain_dir(args.domain), Path(args.runs) / args.domain
    out.mkdir(parents=True, exist_ok=True)
    pairs = out / "train_pairs.jsonl"
    count = write_pairs(beir, pairs)
    extra = [f"train.num_train_epochs={args.epochs}"] if args.epochs else []
    recipes = args.recipes.split(",")
    trained = {r: train(r, pairs, out / r, extra, args.reuse) for r in recipes}
    test = load_beir(beir, "test")
    specs = [f"dense:{MODEL}"] + [f"dense:{out / r / 'final'}" for r in recipes]
    results = evaluate_pipelines(test, specs)
    zero = results[0].metrics["ndcg@10"]
    print(f"{args.domain}: {count} training pairs; test {len(test.queries)} queries over {len(test.corpus)} documents")
    print(f"{'zero-shot':10s} test NDCG@10 {zero:.4f}")
    rows = {"zero-shot": {"test_ndcg@10": zero}}
    for recipe, result in zip(recipes, results[1:]):
        sig = result.significance or {}
        p = (sig.get("p_values") or {}).get("ndcg@10")
        rows[recipe] = {**trained[recipe], "test_ndcg@10": result.metrics["ndcg@10"], "p_vs_zero_shot": p,
                        "better": (sig.get("better") or {}).get("ndcg@10")}
        print(f"{recipe:10s} test NDCG@10 {result.metrics['ndcg@10']:.4f} ({result.metrics['ndcg@10'] - zero:+.4f}, "
              f"p={p if p is None else f'{p:.2g}'}); dev {trained[recipe]['dev_before']:.4f} -> "
              f"{trained[recipe]['dev_after']:.4f}{' (kept the base)' if trained[recipe]['kept_base'] else ''}; "
              f"{trained[recipe]['wall_seconds']:.0f} s")
    write_result(f"defaults_loo_{args.domain}", {"domain": args.domain, "training_pairs": count,
                                                 "epochs": args.epochs, "results": rows})


if __name__ == "__main__":
    main()
