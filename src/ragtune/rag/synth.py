"""Synthetic training data from the user's own chunks: questions from a generator, kept only if they survive
the filters (not a copy of the chunk, not a near-duplicate, and the retriever finds the chunk again).

Outputs: `pairs.jsonl` (query/document, for `train embed`), `rerank.jsonl` (query/document/label with the
retriever's other hits as negatives, for `train rerank`); with `--rag-sft`, `rag_sft.jsonl` (chat records:
retrieved context + question -> the answer written from the source chunk, for `train llm`); with `--clara`,
`clara_compress.jsonl` (CLaRa stage 1: the chunk, each kept question and its answer, and a paraphrase of the chunk
that kept its facts, for `train clara` with `stage: compress`).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.config.rag import DEFAULT_PROMPT
from ragtune.errors import DataError
from ragtune.ingest.chunk import Chunk
from ragtune.progress import counting
from ragtune.rag.generators import generate_counted
from ragtune.utils import write_atomic

log = logging.getLogger(__name__)

QUESTIONS_PROMPT = ("Write {n} different questions that the passage below answers. Each question must make sense "
                    "on its own, without the passage. Write one question per line and nothing else.\n\n"
                    "Passage:\n{text}")
ANSWER_PROMPT = ("Answer the question from the passage, in one or two sentences.\n\nPassage:\n{text}\n\n"
                 "Question: {question}")
PARAPHRASE_PROMPT = ("Rewrite the passage below in your own words. Keep every fact and number, and write only the "
                     "rewritten passage.\n\nPassage:\n{text}")
# the question of a paraphrase record: CLaRa's generator learns to restate the document from its memory vectors
PARAPHRASE_QUESTION = "Restate the document in other words."


@dataclass
class SynthReport:
    chunks: int = 0
    generated: int = 0
    removed: Counter = field(default_factory=Counter)
    kept: int = 0
    paraphrased: int = 0  # --clara: paraphrases written, removed by the filters and kept
    paraphrases_removed: Counter = field(default_factory=Counter)
    paraphrases_kept: int = 0

    def lines(self) -> list[str]:
        lines = ([f"{self.generated} questions generated from {self.chunks} chunks"] +
                 [f"removed as {why}: {n}" for why, n in self.removed.items()] + [f"kept {self.kept}"])
        if self.paraphrased:
            lines += ([f"{self.paraphrased} paraphrases written"] +
                      [f"paraphrases removed as {why}: {n}" for why, n in self.paraphrases_removed.items()] +
                      [f"paraphrases kept {self.paraphrases_kept}"])
        return lines


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def parse_questions(reply: str) -> list[str]:
    """Questions from a generator's reply: one per line, numbering, bullets and "Question 2:" stripped; a line
    that does not end in a question mark is chatter ("Here are three questions:"), not a question."""
    out = []
    for line in reply.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]|[-*•]|Q\d*:|Question\s*\d*\s*:)\s*", "", line, flags=re.I).strip()
        if len(_words(line)) >= 3 and line.rstrip("\"'*").endswith("?"):
            out.append(line)
    return out


def copies_chunk(question: str, chunk: str, n: int = 6) -> bool:
    """The question lifts a run of n words straight out of the chunk (or is all of it)."""
    words, text = _words(question), " ".join(_words(chunk))
    if len(words) < n:
        return " ".join(words) in text and len(words) >= 0.8 * len(_words(chunk))
    return any(" ".join(words[i:i + n]) in text for i in range(len(words) - n + 1))


def near_duplicate(question: str, kept: list[set[str]], threshold: float = 0.8) -> bool:
    words = set(_words(question))
    return any(len(words & other) / max(1, len(words | other)) >= threshold for other in kept)


def clean_paraphrase(reply: str) -> str:
    """The paraphrase in a generator's reply, without a lead-in line such as "Here is the rewritten passage:"."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return " ".join(lines)


def paraphrase_problem(paraphrase: str, chunk: str, n: int = 8) -> str | None:
    """Why a paraphrase is no good for training, or None. Too short to hold the chunk's facts (under 0.3 of its
    words), or half again as long (a small model rambles and repeats itself); a copy (over 40% of its n-word runs are
    the chunk's, n at most the chunk's length); or drifted (it names under 30% of the chunk's content words, those
    of 5 letters or more, or over 40% of its own content words are not in the chunk)."""
    words, source = _words(paraphrase), _words(chunk)
    if len(words) < max(min(8, len(source)), 0.3 * len(source)):
        return "too short"
    if len(words) > 1.5 * max(len(source), 8):
        return "too long"
    n = max(1, min(n, len(source)))
    runs = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    source_runs = {tuple(source[i:i + n]) for i in range(len(source) - n + 1)}
    if runs and sum(run in source_runs for run in runs) > 0.4 * len(runs):
        return "a copy of the chunk"
    content, own = {w for w in source if len(w) >= 5}, {w for w in words if len(w) >= 5}
    if (content and len(content & own) < 0.3 * len(content)) or (own and len(own - content) > 0.4 * len(own)):
        return "drifted from the chunk"
    return None


def paraphrases(chunks: list[Chunk], generator, report: SynthReport) -> list[dict]:
    """CLaRa stage-1 paraphrase records, one per chunk whose paraphrase passes `paraphrase_problem`."""
    asks = [[{"role": "user", "content": PARAPHRASE_PROMPT.format(text=c.text)}] for c in chunks]
    budget = min(512, max(64, 2 * max((len(_words(c.text)) for c in chunks), default=0)))  # ~1.3 tokens a word
    records = []
    for chunk, reply in zip(chunks, generate_counted(generator, asks, budget, what="Writing paraphrases")):
        report.paraphrased += 1
        text = clean_paraphrase(reply.text)
        problem = paraphrase_problem(text, chunk.text)
        if problem:
            report.paraphrases_removed[problem] += 1
            continue
        report.paraphrases_kept += 1
        records.append({"documents": [chunk.text], "question": PARAPHRASE_QUESTION, "answer": text,
                        "source": chunk.source, "kind": "paraphrase"})
    return records


def synthesize(chunks: list[Chunk], generator, search, questions_per_chunk: int = 3, round_trip_k: int = 5,
               negatives: int = 3, rag_sft: bool = False, context_k: int = 3,
               clara: bool = False) -> tuple[dict[str, list[dict]], SynthReport]:
    """Generate, filter and lay out training data; `search(question, k)` returns ranked chunk ids."""
    by_id = {c.id: c for c in chunks}
    report = SynthReport(chunks=len(chunks))
    out: dict[str, list[dict]] = {"pairs": [], "rerank": [], "rag_sft": [], "clara_compress": []}
    answered: list[tuple[Chunk, str, list[str]]] = []  # the kept questions, to answer from their chunks
    seen: list[set[str]] = []
    asks = [[{"role": "user", "content": QUESTIONS_PROMPT.format(n=questions_per_chunk, text=c.text)}]
            for c in chunks]
    replies = [r.text for r in generate_counted(generator, asks, 64 * questions_per_chunk,
                                                what="Writing questions")]  # batched where local
    def kept() -> str:
        return f"{report.kept:,} of {report.generated:,} kept"

    with counting("Checking questions", len(chunks), kept) as advance:
        for chunk, reply in zip(chunks, replies):
            for question in parse_questions(reply)[:questions_per_chunk]:
                report.generated += 1
                if copies_chunk(question, chunk.text):
                    report.removed["a copy of the chunk"] += 1
                    continue
                if near_duplicate(question, seen):
                    report.removed["a near-duplicate"] += 1
                    continue
                ranked = search(question, max(round_trip_k, context_k, negatives + 1))
                if chunk.id not in ranked[:round_trip_k]:
                    report.removed[f"round-trip miss (source not in the top {round_trip_k})"] += 1
                    continue
                seen.append(set(_words(question)))
                report.kept += 1
                out["pairs"].append({"query": question, "document": chunk.text, "source": chunk.source})
                out["rerank"].append({"query": question, "document": chunk.text, "label": 1})
                others = [by_id[i] for i in ranked if i != chunk.id and i in by_id][:negatives]
                out["rerank"] += [{"query": question, "document": o.text, "label": 0} for o in others]
                answered.append((chunk, question, ranked))
            advance(1)
    if clara:
        out["clara_compress"] = paraphrases(chunks, generator, report)
    if not report.kept and not report.paraphrases_kept:
        raise DataError(f"no synthetic question survived the filters ({'; '.join(report.lines())}); check the "
                        "generator's replies, or raise --round-trip-k")
    if not (rag_sft or clara) or not answered:
        return out, report
    asks = [[{"role": "user", "content": ANSWER_PROMPT.format(text=chunk.text, question=question)}]
            for chunk, question, _ in answered]
    answers = [r.text.strip() for r in generate_counted(generator, asks, 128, what="Writing answers")]
    for (chunk, question, ranked), answer in zip(answered, answers):
        if rag_sft:
            context = [by_id[i] for i in ranked[:context_k] if i in by_id]
            blocks = "\n\n".join(f"[{n}] ({c.source}) {c.text}" for n, c in enumerate(context, start=1))
            cite = next((n for n, c in enumerate(context, start=1) if c.id == chunk.id), None)
            out["rag_sft"].append({"messages": [
                {"role": "user", "content": DEFAULT_PROMPT.format(context=blocks, question=question)},
                {"role": "assistant", "content": f"{answer} [{cite}]" if cite else answer}]})
        if clara and answer:  # an empty answer teaches nothing, and `train clara` refuses it
            out["clara_compress"].append({"documents": [chunk.text], "question": question, "answer": answer,
                                          "source": chunk.source, "kind": "qa"})
    return out, report


def write_synth(out_dir: str | Path, data: dict[str, list[dict]]) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for name, rows in data.items():
        if rows:
            path = out_dir / f"{name}.jsonl"
            write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            written.append(path)
    return written


SYNTH_FILES = ("pairs.jsonl", "rerank.jsonl", "rag_sft.jsonl", "clara_compress.jsonl")


def synth_from(source: str, out_dir: str, make_generator, questions: int = 3, round_trip_k: int = 5,
               negatives: int = 3, rag_sft: bool = False, max_chunks: int | None = None, overwrite: bool = False,
               clara: bool = False):
    """`ragtune data synth`: chunks from an index (searched with its hybrid retrieval) or a chunks.jsonl (searched
    with BM25 over the chunks); returns the files written and the report. The output folder and the source are
    checked before `make_generator` (no arguments) loads the generator."""
    from ragtune.errors import OutputError
    from ragtune.index import is_index
    from ragtune.ingest.chunk import read_chunks
    from ragtune.utils import output_folder

    earlier = [name for name in SYNTH_FILES if (output_folder(out_dir) / name).exists()]
    if earlier and not overwrite:
        raise OutputError(f"{out_dir}: holds {', '.join(earlier)} from an earlier run; pass --overwrite to replace "
                          "them, or choose another folder")
    path = Path(source)
    if is_index(path):
        from ragtune.index import Index

        index = Index(path)
        chunks = index.chunks(index.ids()[: max_chunks or None])

        def search(question: str, k: int) -> list[str]:
            return [d for d, _ in index.search(question, k)]
    else:
        from ragtune.retrieval.bm25 import BM25Retriever

        chunks = read_chunks(path)[: max_chunks or None]
        bm25 = BM25Retriever.build({c.id: c.text for c in chunks})

        def search(question: str, k: int) -> list[str]:
            return [d for d, _ in bm25.search([question], k)[0]]
    data, report = synthesize(chunks, make_generator(), search, questions, round_trip_k, negatives, rag_sft,
                              clara=clara)
    return write_synth(out_dir, data), report
