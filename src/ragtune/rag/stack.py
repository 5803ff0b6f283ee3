"""The whole RAG stack tuned and measured on one labelled QA set (PubMedQA PQA-L in BEIR form): tune the embedder,
build RAG SFT data with the tuned retriever, tune the generator with LoRA, and answer the test questions before
and after. `ragtune quickstart rag` runs it on the embedded PubMedQA within a CPU budget; benchmarks/rag_answers.py
runs the full measurement with every system side by side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.data.beir import IRData, load_beir
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir
from ragtune.utils import packaged_resource

log = logging.getLogger(__name__)

LABELS = ["yes", "no", "maybe"]


@dataclass
class StackSettings:
    """What `quickstart rag` trades for time; the benchmark runs the full data."""

    k: int = 3  # passages per answer
    sentences: int | None = 1  # of each long answer, as the SFT target after the label
    train_questions: int | None = None  # SFT on the first N training questions (all: None)
    test_questions: int | None = None  # seeded sample of the test questions for label scoring (all: None)
    free_text_questions: int | None = 100  # of those, answered in free text (citations, ROUGE-L)
    max_new_tokens: int = 96
    calibrate_questions: int | None = None  # training questions the SFT did not use, on which each generator's
    #                                         label offsets are fitted before its test labels are scored (None: raw)
    subset: int | None = None  # the whole stack on a seeded sample of N train and N test questions and their
    #                            passages alone (a smoke run: the corpus shrinks from 3,358 passages to ~7N)
    embed_overrides: list[str] = field(default_factory=list)
    llm_overrides: list[str] = field(default_factory=list)


def tune_embedder(data_dir: str, run_dir: Path, overrides: list[str], reporter: Reporter):
    """The quickstart embedder recipe without its mining (all-MiniLM-L6-v2, PubMedQA train, before/after on
    test)."""
    from ragtune.train.embed import train_embed

    return train_embed(_embed_config(data_dir, run_dir, overrides), overwrite=True, reporter=reporter)


def _embed_config(data_dir: str, run_dir: Path, overrides: list[str]):
    from ragtune.config import load_config

    # No mining here: the stack's 15-minute budget was measured without it (mining pays in `ragtune quickstart`).
    return load_config("embed", packaged_resource("quickstart.yaml"),
                       [f"data.train={data_dir}", f"output.dir={run_dir}", "data.hard_negatives=null", *overrides])


def _llm_config(data: Path, run_dir: Path, overrides: list[str]):
    from ragtune.config import load_config

    return load_config("llm", packaged_resource("rag_llm.yaml"), [f"data.train={data}", f"output.dir={run_dir}",
                                                                   *overrides])


def tune_generator(data_dir: str, retriever: str, out: Path, settings: StackSettings, reporter: Reporter):
    """RAG SFT chats of the training questions, contexts from `retriever`, then `train llm` with the packaged recipe;
    writes out/rag_sft.jsonl and the run in out/llm."""
    from ragtune.data.embed import sample_queries
    from ragtune.rag.sft_data import rag_sft_rows, write_rag_sft
    from ragtune.train.llm import train_llm

    ir = sample_queries(load_beir(data_dir, "train"), settings.train_questions, seed=42)
    with reporter.phase(f"Building RAG SFT data ({len(ir.queries)} questions, contexts from {retriever})"):
        rows = rag_sft_rows(ir, data_dir, retriever, settings.k, LABELS, sentences=settings.sentences)
        data = write_rag_sft(out / "rag_sft.jsonl", rows)
    return train_llm(_llm_config(data, out / "llm", settings.llm_overrides), overwrite=True, reporter=reporter)


def calibration_questions(data_dir: str, settings: StackSettings):
    """A seeded `calibrate_questions` of the training questions that the SFT did not use (None: not asked, or none
    left): each generator's label offsets are fitted on them, so the tuned one is not calibrated on what it learnt."""
    from ragtune.data.embed import sample_queries

    if not settings.calibrate_questions:
        return None
    train = load_beir(data_dir, "train")
    used = set(sample_queries(train, settings.train_questions, seed=42).qrels)
    rest = [q for q in train.qrels if q not in used]
    if not rest:
        log.warning("no training question is left outside the SFT data; labels are scored uncalibrated")
        return None
    unused = IRData(train.corpus, {q: train.queries[q] for q in rest}, {q: train.qrels[q] for q in rest}, train.name)
    return sample_queries(unused, settings.calibrate_questions, seed=42)


def answer(data_dir: str, systems: list[tuple[str, object]], settings: StackSettings, reporter: Reporter,
           with_majority: bool = True) -> tuple[list, list]:
    """Every (pipeline spec, generator) system on the test questions: labels scored on all of them (after
    calibration on held-out training questions, when asked), free text on the first `free_text_questions`. Returns
    (label results, free-text results)."""
    from ragtune.config.rag import RAGSection
    from ragtune.data.embed import sample_queries
    from ragtune.rag.evaluate import evaluate_rag

    ir = sample_queries(load_beir(data_dir, "test"), settings.test_questions, seed=42)
    calibration = calibration_questions(data_dir, settings)
    specs, generators = [s for s, _ in systems], [g for _, g in systems]
    fitted = f", offsets fitted on {len(calibration.qrels)} unused training questions" if calibration else ""
    with reporter.phase(f"Scoring labels ({len(ir.queries)} test questions x {len(systems)} systems{fitted})"):
        labelled = evaluate_rag(ir, data_dir, specs, generators, RAGSection(k=settings.k, max_new_tokens=1),
                                labels=LABELS, with_majority=with_majority, calibration=calibration)
    free = []
    if settings.free_text_questions:
        few = sample_queries(ir, settings.free_text_questions, seed=42)
        with reporter.phase(f"Answering in free text ({len(few.queries)} questions x {len(systems)} systems)"):
            free = evaluate_rag(few, data_dir, specs, generators,
                                RAGSection(k=settings.k, max_new_tokens=settings.max_new_tokens), labels=LABELS,
                                long_answer_field="long_answer")
    return labelled, free


def subset_collection(data_dir: str, out: Path, questions: int) -> str:
    """A BEIR folder in `out` with a seeded sample of `questions` train and `questions` test questions, their
    records as they are (answers included) and their judged passages alone; returns its path."""
    import json

    from ragtune.data.embed import sample_queries
    from ragtune.ingest.readers import read_rows

    source, folder = Path(data_dir), out / "collection"
    splits = {split: sample_queries(load_beir(source, split), questions, seed=42).qrels for split in ("train", "test")}
    docs = {d for qrels in splits.values() for judged in qrels.values() for d in judged}
    asked = {q for qrels in splits.values() for q in qrels}
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name, keep in (("corpus.jsonl", docs), ("queries.jsonl", asked)):
        rows = [r.data for r in read_rows(source / name) if str(r.data["_id"]) in keep]
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for split, qrels in splits.items():
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{s}\n" for q, judged in qrels.items() for d, s in judged.items()), encoding="utf-8")
    return str(folder)


def paired(labelled: list, gold: dict[str, str], a: str, b: str) -> dict[str, float]:
    """Bootstrap on macro-F1 and McNemar on accuracy, system b against system a (names from `labelled`)."""
    from ragtune.eval.label_metrics import mcnemar, paired_bootstrap

    by_name = {r.name: r for r in labelled}
    qids = list(by_name[a].predictions)
    y = [gold[q].strip().lower() for q in qids]
    pa, pb = [by_name[a].predictions[q] for q in qids], [by_name[b].predictions[q] for q in qids]
    return {**paired_bootstrap(y, pa, pb, LABELS), **mcnemar(y, pa, pb)}


# 100 training questions are about 43k tokens, 5 minutes of LoRA on 2 cores; 2 blocks per step (instead of the
# recipe's 8) give 22 optimizer steps instead of 6, which the answer format needs to be learnt at all, and lr 1e-3
# (the recipe's 3e-4 is for a full epoch of 475 questions) learns it in those 22 without the answers degenerating.
# A 135M model answers "yes" to nearly everything, so each generator's label offsets are fitted on 100 training
# questions the SFT did not use (+110 s; on 60, accuracy fell with the noisier offsets): the label rows then
# compare the generators, not their "yes" priors. Answers stop at 48 tokens, in the free-text rows and in the LLM
# run's samples: the trained answers are about 40.
QUICKSTART = StackSettings(train_questions=100, test_questions=150, free_text_questions=30, max_new_tokens=48,
                           calibrate_questions=100,
                           llm_overrides=["train.per_device_train_batch_size=1", "train.gradient_accumulation_steps=2",
                                          "train.learning_rate=1e-3", "eval.max_new_tokens=48"])
EMBED_ROWS = ("ndcg@10", "recall@5")
ANSWER_ROWS = ("accuracy", "macro_f1", "cites_gold")


OWN_KEYS = ("k", "sentences", "train_questions", "test_questions", "free_text_questions", "max_new_tokens",
            "calibrate_questions", "subset")


def parse_quickstart(overrides: list[str]) -> StackSettings:
    """`embed.KEY=V` and `llm.KEY=V` go to those runs' configs; OWN_KEYS set the stack itself."""
    from dataclasses import replace

    from ragtune.errors import ConfigError

    settings, own = replace(QUICKSTART, embed_overrides=[], llm_overrides=list(QUICKSTART.llm_overrides)), {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if key.startswith("embed."):
            settings.embed_overrides.append(item.removeprefix("embed."))
        elif key.startswith("llm."):
            settings.llm_overrides.append(item.removeprefix("llm."))
        elif sep and key in OWN_KEYS and value.isdigit() and (int(value) > 0 or key == "calibrate_questions"):
            own[key] = int(value) or None
        else:
            raise ConfigError(f"quickstart rag: '{item}' is not embed.KEY=VALUE, llm.KEY=VALUE or one of "
                              f"{', '.join(OWN_KEYS)} = a positive whole number (e.g. train_questions=100; "
                              "calibrate_questions=0 scores labels uncalibrated)")
    settings = replace(settings, **own)
    _embed_config(packaged_resource("pubmedqa"), Path("runs/check"), settings.embed_overrides)  # bad keys fail now,
    _llm_config(Path("rag_sft.jsonl"), Path("runs/check"), settings.llm_overrides)  # before any model loads
    return settings


def quickstart_rag(out: Path, settings: StackSettings, reporter: Reporter) -> dict:
    """Tune the embedder, then the generator with it, and compare base embedder + base generator against tuned +
    tuned on the test questions. Returns the before/after rows, the verdict and the runs' folders."""
    from ragtune.config.schema import DEFAULT_EMBEDDER
    from ragtune.models.packaged_llm import DEFAULT_GENERATOR
    from ragtune.rag.generators import LocalGenerator

    data = packaged_resource("pubmedqa")
    if settings.subset:
        data = subset_collection(data, out, settings.subset)
    embed = tune_embedder(data, out / "embed", settings.embed_overrides, reporter)
    tuned_embedder = str(RunDir(embed.run_dir).final)
    llm = tune_generator(data, f"dense:{tuned_embedder}", out, settings, reporter)
    with reporter.phase("Loading the base and the tuned generator"):
        base, tuned = LocalGenerator(DEFAULT_GENERATOR), LocalGenerator(str(RunDir(llm.run_dir).final))
    labelled, free = answer(data, [(f"dense:{DEFAULT_EMBEDDER}", base), (f"dense:{tuned_embedder}", tuned)],
                            settings, reporter, with_majority=False)
    rows = [(m, embed.comparison.before[m], embed.comparison.after[m]) for m in EMBED_ROWS]
    rows += [(m, labelled[0].metrics[m], labelled[1].metrics[m]) for m in ANSWER_ROWS if m in labelled[0].metrics]
    if free:
        rows += [(m, free[0].metrics[m], free[1].metrics[m]) for m in ("cites_gold", "rouge_l")]
    return {"rows": rows, "better": all(after > before for _, before, after in rows), **label_evidence(data, labelled),
            "questions": len(labelled[0].predictions), "free_text_questions": len(free[0].predictions) if free else 0,
            "embedder": tuned_embedder, "generator": str(RunDir(llm.run_dir).final)}


def uncalibrated(result):
    """`result` as its raw label likelihoods answer (the argmax, no offsets), for paired tests and reports."""
    from dataclasses import replace

    from ragtune.eval.label_metrics import predict_with_offsets

    return replace(result, predictions=predict_with_offsets(result.scores, {}), offsets=None)


def raw_report(result, gold: dict[str, str]) -> dict[str, float]:
    """Accuracy, macro-F1 and per-label recall of `result`'s uncalibrated labels against `gold`."""
    from ragtune.eval.label_metrics import label_report

    predicted = uncalibrated(result).predictions
    return label_report([gold[q].strip().lower() for q in predicted], list(predicted.values()), LABELS)


def label_evidence(data_dir: str, labelled: list) -> dict:
    """What stands behind the label rows, base (first) against tuned (second): the paired tests, each generator's
    label offsets, and the uncalibrated accuracy and macro-F1 (argmax of the raw label likelihoods)."""
    from ragtune.rag.evaluate import query_field

    before, after = labelled
    gold = {q: a.strip().lower() for q, a in query_field(data_dir, load_beir(data_dir, "test"), "final_decision",
                                                            inside=True).items()}
    evidence = {"paired": paired(labelled, gold, before.name, after.name),
                "label_offsets": [before.offsets, after.offsets]}
    if after.offsets:
        raw = [raw_report(r, gold) for r in labelled]
        evidence["uncalibrated"] = [(m, raw[0][m], raw[1][m]) for m in ("accuracy", "macro_f1")]
    return evidence
