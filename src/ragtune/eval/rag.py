"""End-to-end RAG evaluation on a QA set with known gold passages (PubMedQA PQA-L in BEIR form, say).

For every system (a retrieval pipeline spec and a generator) it reports: recall of the gold passages in the
top k, answer accuracy over a label set (yes/no/maybe) or EM/F1 against a reference answer, and the share of
answers that cite at least one gold passage.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragtune.config.rag import RAGSection
from ragtune.data.beir import IRData
from ragtune.data.readers import read_rows
from ragtune.errors import DataError
from ragtune.eval.text_metrics import exact_match, predicted_label, token_f1
from ragtune.rag.pipeline import CITATION, Source, cited, compose

log = logging.getLogger(__name__)


@dataclass
class RAGResult:
    name: str
    metrics: dict[str, float]
    examples: list[dict] = field(default_factory=list)


def reference_answers(data: str | Path, ir: IRData, field_name: str) -> dict[str, str]:
    """The reference answer of every query: `field_name` on the query record, or inside its metadata."""
    answers = {}
    for row in read_rows(Path(data) / "queries.jsonl"):
        qid = str(row.data.get("_id"))
        if qid not in ir.queries:
            continue
        value = row.data.get(field_name, (row.data.get("metadata") or {}).get(field_name))
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{row.where}: no answer in field '{field_name}' (or metadata.{field_name}); give "
                            "--answer-field with the field that holds the reference answer")
        answers[qid] = value
    return answers


def evaluate_system(name: str, pipeline, generator, ir: IRData, answers: dict[str, str], settings: RAGSection,
                    labels: list[str]) -> RAGResult:
    recalls, correct, f1s, citing = [], [], [], []
    examples = []
    for qid, question in ir.queries.items():
        hits = pipeline.search([question], settings.k)[0]
        sources = [Source(n, doc, doc, "", None, score, ir.corpus[doc]) for n, (doc, score) in
                   enumerate(hits, start=1)]
        gold = {d for d, s in ir.qrels[qid].items() if s > 0}
        recalls.append(len(gold & {d for d, _ in hits}) / max(1, len(gold)))
        if generator is None:  # retrieval only
            continue
        answer = compose(question, sources, generator, settings)
        text, reference = answer.answer or "", answers[qid]
        plain = CITATION.sub("", text)  # the [n] marks the prompt asks for are not part of the answer
        if labels:
            correct.append(predicted_label(plain, labels) == reference.strip().lower())
        else:
            correct.append(exact_match(plain, reference))
            f1s.append(token_f1(plain, reference))
        citing.append(any(s.id in gold for s in cited(text, answer.sources)))
        if len(examples) < 5:
            examples.append({"question": question, "answer": text, "reference": reference,
                             "cited": [s.id for s in cited(text, answer.sources)], "gold": sorted(gold)})
    metrics = {f"recall@{settings.k}": float(np.mean(recalls))}
    if generator is not None:
        metrics.update({"accuracy" if labels else "exact_match": float(np.mean(correct)),
                        "cites_gold": float(np.mean(citing))})
    if f1s:
        metrics["f1"] = float(np.mean(f1s))
    return RAGResult(name, {k: round(v, 4) for k, v in metrics.items()}, examples)


def evaluate_rag(ir: IRData, data_dir: str, specs: list[str], generators: list, settings: RAGSection,
                 answer_field: str = "final_decision", labels: list[str] | None = None) -> list[RAGResult]:
    """Every (pipeline, generator) system on the same questions; generators pair with specs by position, or one
    generator serves them all. No generators: retrieval recall alone."""
    from ragtune.retrieval.pipeline import PipelineBuilder

    if generators and len(generators) not in (1, len(specs)):
        raise DataError(f"{len(specs)} pipelines but {len(generators)} generators; give one generator, or one per "
                        "pipeline")
    answers = reference_answers(data_dir, ir, answer_field) if generators else {}
    labels = [label.lower() for label in labels or []]
    builder = PipelineBuilder(ir.corpus)
    results = []
    for i, spec in enumerate(specs):
        generator = generators[i if len(generators) > 1 else 0] if generators else None
        name = f"{spec} -> {generator.name}" if generator else spec
        results.append(evaluate_system(name, builder.build(spec), generator, ir, answers, settings, labels))
        log.info("%s: %s", name, results[-1].metrics)
    return results


def rag_payload(results: list[RAGResult], dataset: str, questions: int) -> dict:
    """What `eval rag --json` prints and rag_results.json holds."""
    from dataclasses import asdict

    return {"dataset": dataset, "questions": questions, "systems": [asdict(r) for r in results]}


def write_rag_results(out: str | Path, results: list[RAGResult], dataset: str, questions: int) -> Path:
    from ragtune.utils import write_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "rag_results.json", json.dumps(rag_payload(results, dataset, questions), indent=2))
    names = list(results[0].metrics)
    lines = ["| system | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| `{r.name}` | " + " | ".join(f"{r.metrics[m]:.4f}" for m in names) + " |" for r in results]
    write_atomic(out / "rag_results.md", "\n".join(lines) + "\n")
    return out / "rag_results.json"
