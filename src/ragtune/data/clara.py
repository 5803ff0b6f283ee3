"""CLaRa's records: documents (or candidates), a question and an answer, read from any file ragtune reads.

Stages compress and instruct: {"documents": ["...", ...]} (or {"document": "..."}), "question", "answer". A stage-1
paraphrase record is the same shape: the question asks for a paraphrase and the answer is one. Stage e2e:
{"candidates": [...], "question", "answer", "positives": [indices into candidates, optional]}.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ragtune.errors import ConfigError, DataError
from ragtune.ingest.readers import Row, read_rows


@dataclass
class ClaraRecord:
    documents: list[str]  # the documents to read (compress, instruct) or the candidates (e2e)
    question: str
    answer: str
    origin: str
    positives: list[int] = field(default_factory=list)  # e2e: which candidates hold the answer


def _text(row: Row, name: str) -> str:
    if name not in row.data:
        raise DataError(f"{row.where}: missing field '{name}'; every record needs documents, question and answer")
    value = row.string(name, row.data[name])
    if not value.strip():
        raise DataError(f"{row.where}: field '{name}' is empty; fill it or drop the record")
    return value


def _texts(row: Row, name: str) -> list[str]:
    value = row.data[name]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{row.where}: field '{name}' must be a non-empty list of non-empty strings; fix the record")
    return value


def record(row: Row, stage: str, candidates: int) -> ClaraRecord:
    if stage == "e2e":
        if "candidates" not in row.data:
            raise DataError(f"{row.where}: missing field 'candidates'; stage e2e reads candidates, question and answer")
        docs = _texts(row, "candidates")[:candidates]
        positives = row.data.get("positives", [])
        if not isinstance(positives, list) or not all(isinstance(p, int) and not isinstance(p, bool) and
                                                      0 <= p < len(row.data["candidates"]) for p in positives):
            raise DataError(f"{row.where}: field 'positives' must list indices into candidates; fix the record")
        kept = [p for p in positives if p < candidates]
        return ClaraRecord(docs, _text(row, "question"), _text(row, "answer"), row.where, kept)
    if "documents" in row.data:
        docs = _texts(row, "documents")
    elif "document" in row.data:
        docs = [_text(row, "document")]
    else:
        raise DataError(f"{row.where}: missing field 'documents' (a list) or 'document'; stage {stage} reads "
                        "documents, question and answer")
    return ClaraRecord(docs, _text(row, "question"), _text(row, "answer"), row.where)


def load_clara_data(data, stage: str, candidates: int, seed: int = 42) -> tuple[list[ClaraRecord], list[ClaraRecord]]:
    """(train, held-out) records; the held-out ones are data.eval, or a seeded data.eval_fraction of data.train."""
    if not data.train:
        raise ConfigError("data.train is not set; give a JSONL file of {documents, question, answer} records")
    train = [record(r, stage, candidates) for r in read_rows(data.train)]
    if data.eval:
        held_out = [record(r, stage, candidates) for r in read_rows(data.eval)]
    else:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        cut = max(1, round(len(train) * data.eval_fraction))
        if cut >= len(train):
            raise DataError(f"{data.train}: {len(train)} record(s) cannot be split into training and held-out "
                            "ones; give more records or a data.eval file")
        held_out, train = [train[i] for i in sorted(order[:cut])], [train[i] for i in sorted(order[cut:])]
    if stage == "e2e":
        sizes = {len(r.documents) for r in train + held_out}
        if len(sizes) > 1:
            odd = next(r for r in train + held_out if len(r.documents) != len(train[0].documents))
            raise DataError(f"{odd.origin}: stage e2e needs the same number of candidates in every record (this one "
                            f"has {len(odd.documents)}, the first {len(train[0].documents)}); give each at least "
                            "`candidates` of them")
    if data.max_train_samples:
        train = train[: data.max_train_samples]
    if data.max_eval_samples:
        held_out = held_out[: data.max_eval_samples]
    return train, held_out


def describe(cfg) -> str:
    train, held_out = load_clara_data(cfg.data, cfg.stage, cfg.candidates, cfg.train.seed)
    docs = sum(len(r.documents) for r in train)
    return f"{len(train)} training records ({docs} documents), {len(held_out)} held-out"
