"""How many epochs a new user's data needs: `train embed` with today's defaults on seeded samples of a domain's
training queries, at several epoch counts, each scored on the domain's whole test split against zero-shot.

Each run is what a user with that many labelled pairs gets: plain pairs, no eval file, the run's own dev carve and
checkpoint selection (the base model included), then final/ scored on the official test queries (ranx, paired
t-test against zero-shot). The learning rate stays at the default unless --lr says otherwise.
Run: python -m benchmarks.epochs_rule --domain pubmedqa --grid "60:1,3,6;150:1,2,4;all:1,2" [--lr 5e-5] [--reuse]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.defaults_loo import MODEL, ROOT, domain_dir, train, write_pairs


def parse_grid(text: str) -> list[tuple[int | None, list[float]]]:
    """'60:1,3;all:1,2' -> [(60, [1.0, 3.0]), (None, [1.0, 2.0])]."""
    grid = []
    for part in text.split(";"):
        size, epochs = part.split(":")
        grid.append((None if size == "all" else int(size), [float(e) for e in epochs.split(",")]))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", choices=["pubmedqa", "scifact"], required=True)
    parser.add_argument("--grid", default="60:1,3,6;150:1,2,4;all:1,2", help="QUERIES:EPOCHS,...;... (all = every "
                        "training query)")
    parser.add_argument("--lr", type=float, default=None, help="train.learning_rate (default: the config default)")
    parser.add_argument("--batch", type=int, default=32, help="train.per_device_train_batch_size (the default)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "epochs_rule"))
    parser.add_argument("--reuse", action="store_true", help="score runs already trained in --runs as they are")
    args = parser.parse_args()
    from ragtune.data.beir import load_beir
    from ragtune.eval.retrieval import evaluate_pipelines

    beir, out = domain_dir(args.domain), Path(args.runs) / args.domain
    runs = []
    for queries, epochs in parse_grid(args.grid):
        size = f"q{queries or 'all'}"
        (out / size).mkdir(parents=True, exist_ok=True)
        pairs = out / size / "train_pairs.jsonl"
        count = write_pairs(beir, pairs, queries)
        for e in epochs:
            name = f"{size}-e{e:g}" + (f"-lr{args.lr:g}" if args.lr else "")
            extra = [f"train.num_train_epochs={e}", f"train.per_device_train_batch_size={args.batch}",
                     *([f"train.learning_rate={args.lr}"] if args.lr else [])]
            print(f"training {name}: {count} pairs", flush=True)
            runs.append({"name": name, "queries": queries, "pairs": count, "epochs": e,
                         **train("new", pairs, out / name, extra, args.reuse)})
    test = load_beir(beir, "test")
    results = evaluate_pipelines(test, [f"dense:{MODEL}"] + [f"dense:{out / r['name'] / 'final'}" for r in runs])
    zero = results[0].metrics["ndcg@10"]
    print(f"{args.domain}: test {len(test.queries)} queries over {len(test.corpus)} documents; zero-shot NDCG@10 "
          f"{zero:.4f}")
    for run, result in zip(runs, results[1:]):
        p = ((result.significance or {}).get("p_values") or {}).get("ndcg@10")
        # about 90% of the pairs train after the dev carve
        run.update(test_ndcg=result.metrics["ndcg@10"], delta=result.metrics["ndcg@10"] - zero, p_vs_zero_shot=p,
                   steps_per_epoch=math.ceil(run["pairs"] * 0.9 / args.batch))
        print(f"{run['name']:14s} {run['pairs']:5d} pairs  ~{run['steps_per_epoch'] * run['epochs']:4.0f} steps  "
              f"test {run['test_ndcg']:.4f} ({run['delta']:+.4f}, p={p if p is None else f'{p:.2g}'})  dev "
              f"{run['dev_before']:.4f} -> {run['dev_after']:.4f}{' (kept the base)' if run['kept_base'] else ''}  "
              f"{run['wall_seconds']:.0f} s", flush=True)
    write_result(f"epochs_rule_{args.domain}", {"domain": args.domain, "zero_shot_ndcg@10": zero, "lr": args.lr,
                                                "batch": args.batch, "runs": runs})


if __name__ == "__main__":
    main()
