"""`ragtune data validate`: format, counts, duplicates, empty texts and length statistics of a data file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragtune.data.beir import is_beir_dir, load_beir
from ragtune.data.formats import normalise
from ragtune.ingest.readers import read_rows


@dataclass
class Report:
    path: str
    format: str
    counts: dict[str, int]
    lengths: dict[str, dict[str, float]]  # column -> words: min / mean / p95 / max
    problems: list[str] = field(default_factory=list)  # each names file and line


def _length_stats(texts: list[str]) -> dict[str, float]:
    words = np.array([len(t.split()) for t in texts]) if texts else np.zeros(1)
    return {"min": int(words.min()), "mean": round(float(words.mean()), 1),
            "p95": int(np.percentile(words, 95)), "max": int(words.max())}


def _validate_beir(path: Path) -> Report:
    """Every split must load: unknown query or document ids are errors here, as in training."""
    splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
    if not splits:
        return Report(str(path), "beir", {}, {}, [f"{path}/qrels: no split files; add qrels/train.tsv and "
                                                  "qrels/test.tsv"])
    loaded = {split: load_beir(path, split) for split in splits}
    corpus = loaded[splits[0]].corpus
    counts = {"documents": len(corpus)}
    for split, ir in loaded.items():
        counts[f"{split} queries"] = len(ir.qrels)
        counts[f"{split} judgements"] = sum(len(d) for d in ir.qrels.values())
    empty = [d for d, t in corpus.items() if not t.strip()]
    problems = [f"{path}/corpus.jsonl: document {d!r} has empty text" for d in empty[:20]]
    return Report(str(path), "beir", counts, {"documents": _length_stats(list(corpus.values()))}, problems)


def validate_path(path: str | Path, fmt: str = "auto", columns: dict[str, str] | None = None) -> Report:
    """Read and check a data file; hard errors raise DataError, soft problems are listed in the report."""
    path = Path(path)
    if is_beir_dir(path):
        return _validate_beir(path)
    rows = read_rows(path)
    examples = normalise(rows, fmt, columns)
    problems = list(examples.warnings)
    seen: dict[tuple, str] = {}
    duplicates = 0
    for row, origin in zip(examples.rows, examples.origins):
        key = tuple(row.values())
        if key in seen:
            duplicates += 1
            if duplicates <= 20:
                problems.append(f"{origin}: duplicate of {seen[key]}")
        else:
            seen[key] = origin
    text_columns = [c for c in examples.columns if c != "score"]
    counts = {"records": len(rows), "usable": len(examples.rows), "duplicates": duplicates,
              "empty": len(rows) - len(examples.rows),
              "distinct queries": len({r[text_columns[0]] for r in examples.rows})}
    lengths = {c: _length_stats([r[c] for r in examples.rows]) for c in text_columns}
    return Report(str(path), examples.format, counts, lengths, problems)
