"""RAG SFT data from a labelled QA set in BEIR form: the retrieved context, then the question, then the answer
(the label, the long answer and a citation of the gold passages the context holds), as chat records for
`ragtune train llm`.

The prompt is the one `eval rag` asks with, so that the generator is trained on exactly what it is measured on.
The context comes from a real retriever, gold passages and distractors mixed as they will be at query time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ragtune.config.rag import DEFAULT_PROMPT, RAGSection
from ragtune.data.beir import IRData
from ragtune.rag.evaluate import context_sources, label_prompt, query_field, reference_answers
from ragtune.rag.pipeline import messages_for
from ragtune.utils import write_atomic


def first_sentences(text: str, n: int | None) -> str:
    """The first n sentences of `text` (all of it for None)."""
    text = " ".join((text or "").split())
    if not n:
        return text
    return " ".join(re.split(r"(?<=[.!?])\s+(?=[A-Z0-9(])", text)[:n])


def target_answer(label: str | None, long_answer: str | None, cites: list[int], sentences: int | None = None) -> str:
    """`Yes. <long answer> [1, 3]`: the label first (what label scoring reads), then why (its first `sentences`
    sentences), then the citation."""
    parts = [f"{label.capitalize()}." if label else "", first_sentences(long_answer or "", sentences),
             f"[{', '.join(map(str, cites))}]" if cites else ""]
    return " ".join(p for p in parts if p)


def rag_sft_rows(ir: IRData, data_dir: str | Path, spec: str, k: int = 3, labels: list[str] | None = None,
                 answer_field: str = "final_decision", long_answer_field: str | None = "long_answer",
                 sentences: int | None = None) -> list[dict]:
    """One chat record per question of `ir`, answered from the top k of the `spec` pipeline (or gold/none)."""
    from ragtune.retrieval.pipeline import PipelineBuilder

    labels = [label.lower() for label in labels or []]
    answers = reference_answers(data_dir, ir, answer_field)
    long_answers = query_field(data_dir, ir, long_answer_field, inside=True) if long_answer_field else {}
    settings = RAGSection(k=k, prompt=label_prompt(labels) if labels else DEFAULT_PROMPT)
    sources = context_sources(spec, PipelineBuilder(ir.corpus), ir, k)
    rows = []
    for qid, question in ir.queries.items():
        messages, kept = messages_for(question, sources[qid], None, settings)
        gold = {d for d, s in ir.qrels[qid].items() if s > 0}
        label = answers[qid].strip().lower() if labels else None
        why = long_answers.get(qid) or (None if labels else answers[qid])
        answer = target_answer(label, why, [s.n for s in kept if s.id in gold], sentences)
        rows.append({"messages": [*messages, {"role": "assistant", "content": answer}]})
    return rows


def clara_rows(ir: IRData, data_dir: str | Path, spec: str, stage: str, k: int = 3, candidates: int = 10,
               answer_field: str = "final_decision", long_answer_field: str | None = "long_answer",
               labels: list[str] | None = None, sentences: int | None = 2) -> list[dict]:
    """`ragtune train clara` records from a labelled QA set: stage compress reads each question's gold passages,
    instruct its top k from the `spec` pipeline (gold and distractors mixed, as at query time), and e2e its top
    `candidates` with the gold ones' positions as positives (a question with fewer candidates is left out). The
    answer is the label and the first `sentences` of the long answer, as `data rag-sft` writes it, without a
    citation."""
    from ragtune.retrieval.pipeline import PipelineBuilder

    labels = [label.lower() for label in labels or []]
    answers = reference_answers(data_dir, ir, answer_field)
    long_answers = query_field(data_dir, ir, long_answer_field, inside=True) if long_answer_field else {}
    depth = {"compress": k, "instruct": k, "e2e": candidates}[stage]
    sources = context_sources("gold" if stage == "compress" else spec, PipelineBuilder(ir.corpus), ir, depth)
    rows = []
    for qid, question in ir.queries.items():
        gold = {d for d, s in ir.qrels[qid].items() if s > 0}
        label = answers[qid].strip().lower() if labels else None
        answer = target_answer(label, long_answers.get(qid) or (None if labels else answers[qid]), [], sentences)
        texts = [s.text for s in sources[qid]]
        if not texts or stage == "e2e" and len(texts) < candidates:  # e2e scores the same number for every question
            continue
        if stage == "e2e":
            rows.append({"candidates": texts, "question": question, "answer": answer,
                         "positives": [i for i, s in enumerate(sources[qid]) if s.id in gold]})
        else:
            rows.append({"documents": texts, "question": question, "answer": answer})
    return rows


def write_rag_sft(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
