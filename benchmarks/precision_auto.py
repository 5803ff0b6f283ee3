"""`precision: auto` on this CPU against every fixed precision, for training, encoding and reranking.

For each workload the same model and inputs run in fp32, in bf16 (where the CPU offers it) and in what `auto`
settles on (a fresh probe: its one-off cost is reported apart, since its verdict is cached afterwards),
interleaved, medians over the repeats. Target: auto never slower than the fastest fixed choice by more than 5%.
The CPU's instruction sets are in the JSON.
- train: MNRL steps of all-MiniLM-L6-v2 on PubMedQA pairs (batch 32) through SentenceTransformerTrainer, bf16 as
  autocast (what `train embed` runs), timed from the end of the first step;
- encode: ragtune `encode` of PubMedQA passages (length-sorted batches of 16; a bf16 copy of the weights);
- rerank: ragtune `Reranker.score` of the BM25 top 50 of PubMedQA test questions, MiniLM with a new head.
Run: python -m benchmarks.precision_auto [--steps 10] [--passages 600] [--queries 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.common import StepTimer, pubmedqa_pairs, write_result
from ragtune.data.beir import load_beir
from ragtune.models.cpu import cpu_summary
from ragtune.models.device import Placement, choose_placement, precisions_offered, settle
from ragtune.models.load import load_cross_encoder, load_embedder
from ragtune.utils import packaged_resource as packaged

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def fixed(precision: str) -> Placement:
    return Placement("cpu", precision, "fixed by the benchmark")


def auto(model, workload: str) -> tuple[Placement, float]:
    """What auto settles on for `model`, from a fresh probe, and the probe's seconds."""
    import ragtune.models.precision_probe as probe

    probe._VERDICTS.clear()
    with tempfile.TemporaryDirectory() as cache:  # no verdict cached from an earlier run
        previous, os.environ["RAGTUNE_CACHE"] = os.environ.get("RAGTUNE_CACHE"), cache
        try:
            start = time.perf_counter()
            placement = settle(choose_placement("cpu"), model, workload)
            return placement, time.perf_counter() - start
        finally:
            os.environ.pop("RAGTUNE_CACHE") if previous is None else os.environ.update(RAGTUNE_CACHE=previous)


def train_rate(pairs: list[dict], steps: int, precision: str) -> float:
    """Training pairs per second in `precision` (bf16 = autocast, as the Trainer runs it)."""
    import datasets
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from ragtune.train.recipe import seed_everything, set_dropout

    seed_everything(0)
    model = load_embedder(MODEL, fixed("fp32"))
    set_dropout(model, 0.0)
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(output_dir=out, per_device_train_batch_size=32, max_steps=steps,
                                                    save_strategy="no", report_to="none", disable_tqdm=True,
                                                    use_cpu=True, bf16=precision == "bf16")
        timer = StepTimer()
        SentenceTransformerTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(pairs),
                                   loss=MultipleNegativesRankingLoss(model), callbacks=[timer]).train()
    return timer.per_second(32)


def encode_rate(model, texts: list[str], placement: Placement) -> float:
    from ragtune.retrieval.dense import encode

    encode(model, texts[:32], placement)  # warm-up (and the bf16 copy's first allocation)
    start = time.perf_counter()
    encode(model, texts, placement)
    return len(texts) / (time.perf_counter() - start)


def rerank_rate(model, queries: list[tuple[str, list[str]]], placement: Placement) -> float:
    from ragtune.retrieval.rerank import Reranker

    reranker = Reranker(model, placement)
    reranker.score(queries[0][0], queries[0][1][:8])
    start = time.perf_counter()
    pairs = sum(len(reranker.score(q, docs)) for q, docs in queries)
    return pairs / (time.perf_counter() - start)


def row(workload: str, unit: str, measure, model, repeats: int) -> dict:
    """Each variant `repeats` times, interleaved so that drift hits all alike; the median rate of each (this VM's
    noise moves single runs of one configuration by 10-30%)."""
    precisions = precisions_offered()
    chosen, probe_s = auto(model, workload)
    variants = {**{p: fixed(p) for p in precisions}, "auto": chosen}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, placement in variants.items():
            runs[name].append(measure(placement))
    rates = {name: sorted(values)[len(values) // 2] for name, values in runs.items()}
    best = max(rates[p] for p in precisions)
    result = {"unit": unit, "rates": {k: round(v, 2) for k, v in rates.items()}, "auto_chose": chosen.precision,
              "auto_reason": chosen.reason, "probe_seconds": round(probe_s, 2),
              "auto_vs_fastest_fixed": round(rates["auto"] / best, 3),
              "runs": {k: [round(x, 2) for x in v] for k, v in runs.items()}}
    print(f"{workload:6s} " + "  ".join(f"{k} {v:.1f} {unit}" for k, v in rates.items()) +
          f"  -> auto chose {chosen.precision} (probe {probe_s:.1f} s), {rates['auto'] / best:.3f}x of the fastest")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--passages", type=int, default=600)
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(cpu_summary())
    ir = load_beir(packaged("pubmedqa"), "test")
    passages = list(ir.corpus.values())[: args.passages]
    from ragtune.retrieval.bm25 import BM25Retriever

    bm25 = BM25Retriever.build(ir.corpus)
    questions = list(ir.queries.values())[: args.queries]
    candidates = [(q, [ir.corpus[d] for d, _ in hits]) for q, hits in zip(questions, bm25.search(questions, 50))]
    pairs = pubmedqa_pairs()
    results = {}
    probe_model = load_embedder(MODEL, fixed("fp32"))
    results["train"] = row("train", "pairs/s", lambda p: train_rate(pairs, args.steps, p.precision), probe_model,
                           args.repeats)
    embedder = load_embedder(MODEL, fixed("fp32"))
    results["encode"] = row("encode", "docs/s", lambda p: encode_rate(embedder, passages, p), embedder, args.repeats)
    cross = load_cross_encoder(MODEL, fixed("fp32"), new_head=True)
    results["rerank"] = row("rerank", "pairs/s", lambda p: rerank_rate(cross, candidates, p), cross, args.repeats)
    worst = min(r["auto_vs_fastest_fixed"] for r in results.values())
    print(f"auto against the fastest fixed precision, worst workload: {worst:.3f}x (target >= 0.95)")
    write_result("precision_auto", {"cpu_features": cpu_summary(), "workloads": results,
                                    "worst_auto_vs_fastest": worst, "steps": args.steps,
                                    "passages": len(passages), "queries": len(candidates), "repeats": args.repeats})


if __name__ == "__main__":
    main()
