"""Training throughput: `ragtune train embed` against a plain sentence-transformers script.

Same model (all-MiniLM-L6-v2), same data (PubMedQA question/passage pairs), same loss (MNRL), same batch size (32),
same number of steps. The plain script uses default SentenceTransformerTrainingArguments. Each run is timed from the
end of its first step to the end of its last (evaluation excluded), so start-up and the first step's warm-up do not
count. Target: at least 1.5x pairs/s.
Run: python benchmarks/train_throughput.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import StepTimer, TimedReporter, pubmedqa_pairs, write_result

BATCH = 32


def plain(pairs: list[dict], steps: int, out: Path) -> float:
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from ragtune.models.resolve import resolve_model

    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    args = SentenceTransformerTrainingArguments(output_dir=str(out), per_device_train_batch_size=BATCH,
                                                max_steps=steps, save_strategy="no", report_to="none",
                                                disable_tqdm=True)
    timer = StepTimer()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(pairs),
                               loss=MultipleNegativesRankingLoss(model), callbacks=[timer]).train()
    return timer.per_second(BATCH)


def ragtune(pairs: list[dict], steps: int, out: Path) -> float:
    from ragtune.config import load_config
    from ragtune.train.embed import train_embed

    out.mkdir(parents=True, exist_ok=True)
    train_file, eval_file = out / "train.jsonl", out / "eval.jsonl"
    train_file.write_text("".join(json.dumps(p) + "\n" for p in pairs[:-60]))
    eval_file.write_text("".join(json.dumps(p) + "\n" for p in pairs[-60:]))
    cfg = load_config("embed", None, [f"data.train={train_file}", f"data.eval={eval_file}", f"output.dir={out / 'run'}",
                                      f"train.max_steps={steps}", f"train.per_device_train_batch_size={BATCH}",
                                      "train.eval_steps=1000", "train.save_steps=1000"])
    timer = StepTimer()
    train_embed(cfg, reporter=TimedReporter(timer))
    return timer.per_second(BATCH)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    pairs = [{"anchor": p["anchor"], "positive": p["positive"]} for p in pubmedqa_pairs()]
    with tempfile.TemporaryDirectory() as tmp:
        base = plain(pairs, args.steps, Path(tmp) / "plain")
        ours = ragtune(pairs, args.steps, Path(tmp) / "ragtune")
    ratio = ours / base
    print(f"plain sentence-transformers: {base:.1f} pairs/s")
    print(f"ragtune train embed:         {ours:.1f} pairs/s")
    print(f"speed-up: {ratio:.2f}x (target 1.5x)")
    write_result("train_throughput", {"steps": args.steps, "batch_size": BATCH, "pairs_per_s": {
        "plain": round(base, 2), "ragtune": round(ours, 2)}, "speedup": round(ratio, 3)})


if __name__ == "__main__":
    main()
