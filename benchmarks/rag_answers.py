"""RAG answers on PubMedQA PQA-L, end to end: does tuning the generator make the answers better?

The 500 official test questions with their yes/no/maybe labels, over the 3,358 packaged passages. In one run:
the majority class; the packaged SmolLM2-135M-Instruct with no context, with the base retriever (all-MiniLM-L6-v2)
and with the tuned retriever; the LoRA-tuned generator with the tuned retriever; and the tuned generator with the
gold passages (the upper bound). Labels are scored by likelihood on all 500 questions; a seeded sample is answered
in free text for the citation share and ROUGE-L against PubMedQA's long answers. The tuned generator against the
base one, both with the tuned retriever, gets a paired bootstrap on macro-F1 and McNemar's test on accuracy.

The tuned retriever is the quickstart embedder run; the tuned generator is `train llm` with the packaged RAG recipe
(src/ragtune/resources/rag_llm.yaml) on RAG SFT chats of the 500 training questions, contexts from that retriever.

With --train-questions 400 --calibrate-questions 100, the SFT uses a seeded 400 of the training questions and
every system's label offsets are fitted (for macro-F1) on 100 of the rest, which the tuned generator never saw;
the uncalibrated figures are kept beside the calibrated ones.

Run:  python -m benchmarks.rag_answers [--embedder RUN/final] [--generator RUN/final] [--free-text 100]
                                       [--train-questions N] [--calibrate-questions N] [--llm KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import write_result
from ragtune.config.schema import DEFAULT_EMBEDDER
from ragtune.models.packaged_llm import DEFAULT_GENERATOR
from ragtune.progress import Reporter
from ragtune.utils import packaged_resource

PUBMEDQA = packaged_resource("pubmedqa")


def main() -> None:
    from ragtune.data.beir import load_beir
    from ragtune.rag.evaluate import reference_answers
    from ragtune.rag.generators import LocalGenerator
    from ragtune.rag.stack import StackSettings, answer, paired, tune_embedder, tune_generator, uncalibrated

    parser = argparse.ArgumentParser()
    parser.add_argument("--embedder", help="a tuned embedder (default: run the quickstart recipe)")
    parser.add_argument("--generator", help="a tuned generator run's final/ (default: train one)")
    parser.add_argument("--free-text", type=int, default=100, help="test questions answered in free text")
    parser.add_argument("--test-questions", type=int, default=None, help="label-scored test questions (all: 500)")
    parser.add_argument("--train-questions", type=int, default=None, help="SFT on a seeded N training questions "
                        "(all: 500)")
    parser.add_argument("--calibrate-questions", type=int, default=0, help="fit each system's label offsets on N "
                        "training questions the SFT did not use (0: labels scored raw)")
    parser.add_argument("--calibrate", action="store_true", help="only the base and tuned generator with the tuned "
                        "retriever, label offsets fitted on the 500 training questions (needs --embedder, --generator)")
    parser.add_argument("--llm", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of the packaged RAG LoRA recipe, e.g. answer_start_weight=10 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/rag_answers"))
    args = parser.parse_args()
    if args.calibrate:
        return calibrated(args.embedder, args.generator, args.test_questions)
    reporter, started, timings = Reporter(), time.perf_counter(), {}
    settings = StackSettings(free_text_questions=args.free_text, test_questions=args.test_questions,
                             train_questions=args.train_questions, calibrate_questions=args.calibrate_questions,
                             llm_overrides=args.llm)
    tuned_embedder = args.embedder
    if not tuned_embedder:
        start = time.perf_counter()
        run = tune_embedder(PUBMEDQA, args.out / "embed", [], reporter)
        tuned_embedder, timings["tune_embedder_s"] = str(run.run_dir / "final"), time.perf_counter() - start
    tuned_generator = args.generator
    if not tuned_generator:
        start = time.perf_counter()
        run = tune_generator(PUBMEDQA, f"dense:{tuned_embedder}", args.out, settings, reporter)
        tuned_generator, timings["tune_generator_s"] = str(run.run_dir / "final"), time.perf_counter() - start
        timings["generator_train_s"], timings["generator_train_examples"] = run.train_seconds, run.train_examples
    base, tuned = LocalGenerator(DEFAULT_GENERATOR), LocalGenerator(tuned_generator)
    retrieved = f"dense:{tuned_embedder}"
    systems = [("none", base), (f"dense:{DEFAULT_EMBEDDER}", base), (retrieved, base), (retrieved, tuned),
               ("gold", tuned)]
    start = time.perf_counter()
    labelled, free = answer(PUBMEDQA, systems, settings, reporter)
    timings["answer_s"] = time.perf_counter() - start
    gold = reference_answers(PUBMEDQA, load_beir(PUBMEDQA, "test"), "final_decision")
    test = paired(labelled, gold, f"{retrieved} -> {base.name}", f"{retrieved} -> {tuned.name}")
    if args.calibrate_questions:  # the same test on the raw label likelihoods
        raw = [uncalibrated(r) for r in labelled if r.scores]
        test["raw"] = paired(raw, gold, f"{retrieved} -> {base.name}", f"{retrieved} -> {tuned.name}")
    free_by_name = {r.name: r.metrics for r in free}
    rows = [{"system": r.name, **r.metrics, **raw_figures(r, gold),
             **{f"free_{k}": v for k, v in free_by_name.get(r.name, {}).items()
                if k in ("cites_gold", "rouge_l", "accuracy")}} for r in labelled]
    for row in rows:
        print(" | ".join(f"{k}={v}" for k, v in row.items()))
    print(f"tuned vs base generator (tuned retriever): macro-F1 {test['delta_macro_f1']:+.4f}, bootstrap p "
          f"{test['p_bootstrap']:.4g}, McNemar p {test['p_mcnemar']:.4g} (target +0.10 at p < 0.05)")
    if "raw" in test:
        print(f"uncalibrated: macro-F1 {test['raw']['delta_macro_f1']:+.4f}, bootstrap p {test['raw']['p_bootstrap']:.4g}, "
              f"McNemar p {test['raw']['p_mcnemar']:.4g}")
    timings["total_s"] = time.perf_counter() - started
    write_result("rag_answers", {"dataset": "PubMedQA PQA-L test", "questions": len(labelled[0].predictions),
                                 "llm_overrides": args.llm, "train_questions": args.train_questions,
                                 "calibrate_questions": args.calibrate_questions,
                                 "free_text_questions": args.free_text, "tuned_embedder": tuned_embedder,
                                 "tuned_generator": tuned_generator, "k": settings.k, "systems": rows,
                                 "free_text_examples": {r.name: r.examples[:3] for r in free},
                                 "tuned_vs_base": test, "timings_s": {k: round(v, 1) for k, v in timings.items()}})


def raw_figures(result, gold: dict[str, str]) -> dict:
    """A calibrated system's offsets and its accuracy and macro-F1 from the raw label likelihoods (argmax)."""
    from ragtune.rag.stack import raw_report

    if not result.offsets:
        return {}
    raw = raw_report(result, gold)
    return {"offsets": result.offsets, "raw_accuracy": raw["accuracy"], "raw_macro_f1": raw["macro_f1"]}


def calibrated(tuned_embedder: str, tuned_generator: str, test_questions: int | None) -> None:
    """Label offsets per system fitted for macro-F1 on the training questions, applied to the test questions."""
    from ragtune.config.rag import RAGSection
    from ragtune.data.beir import load_beir
    from ragtune.data.embed import sample_queries
    from ragtune.rag.evaluate import evaluate_rag, reference_answers
    from ragtune.rag.generators import LocalGenerator
    from ragtune.rag.stack import LABELS, paired

    started = time.perf_counter()
    base, tuned = LocalGenerator(DEFAULT_GENERATOR), LocalGenerator(tuned_generator)
    retrieved = f"dense:{tuned_embedder}"
    test = sample_queries(load_beir(PUBMEDQA, "test"), test_questions, seed=42)
    results = evaluate_rag(test, PUBMEDQA, [retrieved, retrieved], [base, tuned], RAGSection(k=3, max_new_tokens=1),
                           labels=LABELS, calibration=load_beir(PUBMEDQA, "train"))
    gold = reference_answers(PUBMEDQA, test, "final_decision")
    comparison = paired(results, gold, results[0].name, results[1].name)
    for r in results:
        print(f"{r.name}: offsets {r.offsets} -> " + " | ".join(f"{k}={v}" for k, v in r.metrics.items()))
    print(f"calibrated, tuned vs base generator (tuned retriever): macro-F1 {comparison['delta_macro_f1']:+.4f}, "
          f"bootstrap p {comparison['p_bootstrap']:.4g}, McNemar p {comparison['p_mcnemar']:.4g}")
    write_result("rag_answers_calibrated", {"tuned_embedder": tuned_embedder, "tuned_generator": tuned_generator,
                                            "calibration": "label offsets fitted for macro-F1 on the 500 training "
                                                           "questions, per system",
                                            "systems": [{"system": r.name, "offsets": r.offsets, **r.metrics}
                                                        for r in results],
                                            "tuned_vs_base": comparison,
                                            "total_s": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
