"""End-to-end RAG evaluation on a QA set with known gold passages (PubMedQA PQA-L in BEIR form, say).

For every system (a retrieval pipeline spec, or `none` for no context, or `gold` for the gold passages, and a
generator) it reports: recall of the gold passages in the top k; for a label set (yes/no/maybe) accuracy, macro-F1
and per-class recall, or EM/F1 against a reference answer; the share of answers that cite a gold passage; and, with
a long-answer field, ROUGE-L of the free-text answers. Labels are scored by the generator's likelihood of each label
as the start of its answer, so that no parsing can fail; an endpoint gives no likelihoods, so its labels are read
from the answer text, and an answer that names none counts as wrong and is reported.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragtune.config.rag import DEFAULT_PROMPT, RAGSection
from ragtune.data.beir import IRData
from ragtune.errors import DataError
from ragtune.eval.label_metrics import MISSING, fit_label_offsets, label_report, predict_with_offsets
from ragtune.eval.text_metrics import exact_match, predicted_label, rouge_l, token_f1
from ragtune.ingest.readers import read_rows
from ragtune.rag.generators import generate_counted
from ragtune.rag.pipeline import CITATION, Source, cited, messages_for

log = logging.getLogger(__name__)
CONTEXTS = {"none": "no context: the question alone", "gold": "the gold passages (an upper bound)"}
MAJORITY = "majority"  # the system that always answers the most common label of the other questions


def label_prompt(labels: list[str]) -> str:
    """The RAG prompt for a label set: the answer starts with the label, then says why, citing passages."""
    names = ", ".join(label.capitalize() for label in labels[:-1]) + f" or {labels[-1].capitalize()}"
    return ("Answer the question from the numbered context passages below. Start your answer with "
            f"{names}, then explain it in one or two sentences, citing the passages you use as [1], [2], ...\n\n"
            "Context:\n{context}\n\nQuestion: {question}")


@dataclass
class RAGResult:
    name: str
    metrics: dict[str, float]
    examples: list[dict] = field(default_factory=list)
    predictions: dict[str, str] = field(default_factory=dict)  # question id -> predicted label (for paired tests)
    scores: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)  # label log-likelihoods
    offsets: dict[str, float] | None = None  # label offsets fitted on the calibration split, when calibrated
    per_query: dict[str, float] | None = None  # each question's score: right label 1/0, token F1, or recall


def query_field(data: str | Path, ir: IRData, field_name: str, inside: bool) -> dict[str, str]:
    """`field_name` of every query record (top level or in its metadata): for the questions of `ir` when `inside`,
    for the other questions otherwise."""
    values = {}
    for row in read_rows(Path(data) / "queries.jsonl"):
        qid = str(row.data.get("_id"))
        if (qid in ir.queries) != inside:
            continue
        value = row.data.get(field_name, (row.data.get("metadata") or {}).get(field_name))
        if not isinstance(value, str) or not value.strip():
            if not inside:
                continue
            raise DataError(f"{row.where}: no answer in field '{field_name}' (or metadata.{field_name}); give "
                            f"the field that holds it (--answer-field / --long-answer-field)")
        values[qid] = value
    return values


def reference_answers(data: str | Path, ir: IRData, field_name: str) -> dict[str, str]:
    """The reference answer of every query: `field_name` on the query record, or inside its metadata."""
    return query_field(data, ir, field_name, inside=True)


def majority_label(data: str | Path, ir: IRData, field_name: str, labels: list[str]) -> str:
    """The most common label among the questions *not* evaluated (the training split), else among all."""
    others = [v.strip().lower() for v in query_field(data, ir, field_name, inside=False).values()]
    counts = Counter(v for v in others if v in labels) or Counter(
        v.strip().lower() for v in reference_answers(data, ir, field_name).values())
    return counts.most_common(1)[0][0]


def context_sources(spec: str, builder, ir: IRData, k: int) -> dict[str, list[Source]]:
    """The ranked passages each question is answered from: retrieved by the spec's pipeline, none, or gold."""
    if spec == "none":
        return {qid: [] for qid in ir.queries}
    if spec == "gold":
        return {qid: [Source(n, d, d, "", None, 1.0, ir.corpus[d]) for n, d in
                      enumerate(sorted(d for d, s in ir.qrels[qid].items() if s > 0 and d in ir.corpus), start=1)]
                for qid in ir.queries}
    qids = list(ir.queries)
    hits = builder.build(spec).search([ir.queries[q] for q in qids], k)
    return {qid: [Source(n, d, d, "", None, score, ir.corpus[d]) for n, (d, score) in enumerate(found, start=1)]
            for qid, found in zip(qids, hits)}


def evaluate_system(name: str, sources: dict[str, list[Source]], generator, ir: IRData, answers: dict[str, str],
                    settings: RAGSection, labels: list[str], long_answers: dict[str, str] | None = None,
                    majority: str | None = None, retrieved: bool = True,
                    offsets: dict[str, float] | None = None) -> RAGResult:
    """One system's metrics over every question of `ir`; `majority` instead of a generator answers that label.
    `retrieved`: the sources come from a retriever, so their recall of the gold passages is reported. `offsets`
    shift each label's log-likelihood before the argmax (fitted by `fit_label_offsets` on other questions)."""
    qids = list(ir.queries)
    gold = {q: {d for d, s in ir.qrels[q].items() if s > 0} for q in qids}
    metrics: dict[str, float] = {}
    recall = {q: len(gold[q] & {s.id for s in sources[q]}) / max(1, len(gold[q])) for q in qids}
    if retrieved and any(sources[q] for q in qids):
        metrics[f"recall@{settings.k}"] = float(np.mean(list(recall.values())))
    if generator is None and majority is None:
        return RAGResult(name, _rounded(metrics), per_query=recall if retrieved else None)
    scores: dict[str, dict[str, float]] = {}
    if majority is not None:
        texts, predictions = {q: majority for q in qids}, {q: majority for q in qids}
        kept = {q: [] for q in qids}
    else:
        texts, predictions, kept, scores = _answer_all(generator, ir, qids, sources, settings, labels)
        if offsets and scores:
            predictions = predict_with_offsets(scores, offsets)
    references = {q: answers[q].strip() for q in qids}
    if labels:
        metrics.update(label_report([references[q].lower() for q in qids], [predictions[q] for q in qids], labels))
        per_question = {q: float(predictions[q] == references[q].lower()) for q in qids}
        unlabelled = sum(predictions[q] == MISSING for q in qids)
        if unlabelled:
            log.warning("%s: %d of %d answers name none of the labels %s; they count as wrong", name, unlabelled,
                        len(qids), labels)
        metrics["no_label"] = unlabelled / len(qids)
    else:
        plain = {q: CITATION.sub("", texts[q]) for q in qids}
        metrics["exact_match"] = float(np.mean([exact_match(plain[q], references[q]) for q in qids]))
        per_question = {q: token_f1(plain[q], references[q]) for q in qids}
        metrics["f1"] = float(np.mean(list(per_question.values())))
    if majority is None and settings.max_new_tokens > 1:
        metrics["cites_gold"] = float(np.mean([any(s.id in gold[q] for s in cited(texts[q], kept[q])) for q in qids]))
        if long_answers:
            metrics["rouge_l"] = rouge_l([CITATION.sub("", texts[q]) for q in qids], [long_answers[q] for q in qids])
    examples = [{"question": ir.queries[q], "answer": texts[q], "reference": references[q],
                 "cited": [s.id for s in cited(texts[q], kept[q])], "gold": sorted(gold[q]),
                 **({"predicted": predictions[q]} if labels else {})} for q in qids[:5]]
    return RAGResult(name, _rounded(metrics), examples, predictions if labels else {}, scores,
                     offsets if scores else None, per_question)


def _answer_all(generator, ir: IRData, qids: list[str], sources, settings: RAGSection, labels: list[str]):
    """Answer text, predicted label and the sources each prompt kept, for every question, in batches."""
    chats, kept = {}, {}
    if getattr(generator, "reads_sources", False):  # CLaRa: the passages themselves, compressed, not their text
        kept = {q: sources[q][:settings.k] for q in qids}
        replies = generator.answer_sources([ir.queries[q] for q in qids], [[s.text for s in kept[q]] for q in qids],
                                           settings.max_new_tokens, labels or None)
    else:
        for q in qids:
            chats[q], kept[q] = messages_for(ir.queries[q], sources[q], generator, settings)
        replies = generate_counted(generator, [chats[q] for q in qids], settings.max_new_tokens, labels or None,
                                   "Answering")
    texts = {q: r.text for q, r in zip(qids, replies)}
    predictions, scores = {}, {}
    for q, reply in zip(qids, replies):
        if not labels:
            continue
        if reply.label_logprobs:
            scores[q] = reply.label_logprobs
            predictions[q] = max(reply.label_logprobs, key=reply.label_logprobs.get)
        else:
            predictions[q] = predicted_label(CITATION.sub("", reply.text), labels) or MISSING
    return texts, predictions, kept, scores


def fit_offsets(spec: str, builder, generator, calibration: IRData, data_dir, answer_field: str,
                settings: RAGSection, labels: list[str]) -> dict[str, float] | None:
    """The label offsets that maximise this system's macro-F1 on the calibration questions (None: no likelihoods)."""
    gold = reference_answers(data_dir, calibration, answer_field)
    qids = list(calibration.queries)
    sources = context_sources(spec, builder, calibration, settings.k)
    one_token = settings.model_copy(update={"max_new_tokens": 1})
    _, _, _, scores = _answer_all(generator, calibration, qids, sources, one_token, labels)
    if not scores:
        return None
    return fit_label_offsets([gold[q].strip().lower() for q in qids], [scores[q] for q in qids], labels)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def evaluate_rag(ir: IRData, data_dir: str, specs: list[str], generators: list, settings: RAGSection,
                 answer_field: str = "final_decision", labels: list[str] | None = None,
                 long_answer_field: str | None = None, with_majority: bool = False,
                 calibration: IRData | None = None) -> list[RAGResult]:
    """Every (pipeline, generator) system on the same questions; generators pair with specs by position, or one
    generator serves them all. No generators: retrieval recall alone. `with_majority` adds the majority-label
    system first (label sets only). `calibration` (other questions, e.g. the training split): each system first
    answers those, and the label offsets that maximise its macro-F1 there shift its label scores here."""
    from ragtune.retrieval.pipeline import PipelineBuilder

    if generators and len(generators) not in (1, len(specs)):
        raise DataError(f"{len(specs)} pipelines but {len(generators)} generators; give one generator, or one per "
                        "pipeline")
    labels = [label.lower() for label in labels or []]
    answers = reference_answers(data_dir, ir, answer_field) if generators or with_majority else {}
    long_answers = query_field(data_dir, ir, long_answer_field, inside=True) if long_answer_field else None
    if labels and generators and settings.prompt == DEFAULT_PROMPT:
        settings = settings.model_copy(update={"prompt": label_prompt(labels)})
    builder = PipelineBuilder(ir.corpus)
    results = []
    if with_majority and labels:
        top = majority_label(data_dir, ir, answer_field, labels)
        results.append(evaluate_system(f"{MAJORITY} ({top})", {q: [] for q in ir.queries}, None, ir, answers,
                                       settings, labels, majority=top))
    for i, spec in enumerate(specs):
        generator = generators[i if len(generators) > 1 else 0] if generators else None
        name = f"{spec} -> {generator.name}" if generator else spec
        offsets = None
        if calibration is not None and labels and generator is not None:
            offsets = fit_offsets(spec, builder, generator, calibration, data_dir, answer_field, settings, labels)
            log.info("%s: label offsets %s, fitted on %d %s questions", name, offsets, len(calibration.queries),
                     calibration.name)
        sources = context_sources(spec, builder, ir, settings.k)
        results.append(evaluate_system(name, sources, generator, ir, answers, settings, labels, long_answers,
                                       retrieved=spec not in CONTEXTS, offsets=offsets))
        log.info("%s: %s", name, results[-1].metrics)
    return results


def metric_columns(results: list[RAGResult]) -> list[str]:
    """Every metric any system has, in first-seen order (the majority system has no recall, say)."""
    return list(dict.fromkeys(m for r in results for m in r.metrics))


def rag_payload(results: list[RAGResult], dataset: str, questions: int) -> dict:
    """What `eval rag --json` prints and rag_results.json holds."""
    from dataclasses import asdict

    systems = [{k: v for k, v in asdict(r).items() if k != "scores"} for r in results]
    return {"dataset": dataset, "questions": questions, "systems": systems}


def write_rag_results(out: str | Path, results: list[RAGResult], dataset: str, questions: int,
                      queries: dict[str, str] | None = None) -> Path:
    """rag_results.json, .md and .html (the systems' bars, and the questions each gained and lost against the first
    row; `queries` gives their texts)."""
    from ragtune.eval.results_html import write_results_html
    from ragtune.utils import write_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "rag_results.json", json.dumps(rag_payload(results, dataset, questions), indent=2))
    names = metric_columns(results)
    lines = ["| system | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| `{r.name}` | " + " | ".join(f"{r.metrics[m]:.4f}" if m in r.metrics else "" for m in names) + " |"
              for r in results]
    write_atomic(out / "rag_results.md", "\n".join(lines) + "\n")
    primary = next((m for m in ("macro_f1", "f1", "accuracy") if m in names), names[0] if names else "")
    if primary:
        scored = ("the right label (1/0)" if "macro_f1" in names else "token F1" if "f1" in names
                  else "recall of the gold passages")
        write_results_html(out / "rag_results.html", results, dataset, names, primary, queries,
                           subtitle=f"{questions} questions", per_query_name=scored)
    return out / "rag_results.json"
