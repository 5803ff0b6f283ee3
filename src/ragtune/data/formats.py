"""Embedding data formats: detect each from its fields and normalise rows to canonical columns.

Canonical columns: pairs -> (anchor, positive); triplets -> (anchor, positive, negative_1..n);
scored_pairs -> (sentence1, sentence2, score).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragtune.config.schema import unknown_role
from ragtune.errors import DataError
from ragtune.ingest.readers import Row

# Each format lists its accepted field spellings, most specific first; each spelling maps a role to a field.
SPELLINGS: dict[str, list[dict[str, str]]] = {
    "triplets": [
        {"anchor": "query", "positive": "positive", "negatives": "negatives"},
        {"anchor": "anchor", "positive": "positive", "negatives": "negatives"},
        {"anchor": "query", "positive": "positive", "negative": "negative"},
        {"anchor": "anchor", "positive": "positive", "negative": "negative"},
    ],
    "scored_pairs": [
        {"sentence1": "sentence1", "sentence2": "sentence2", "score": "score"},
        {"sentence1": "doc1", "sentence2": "doc2", "score": "similarity"},
        {"sentence1": "query", "sentence2": "document", "score": "label"},
    ],
    "pairs": [
        {"anchor": "query", "positive": "document"},
        {"anchor": "anchor", "positive": "positive"},
        {"anchor": "question", "positive": "answer"},
        {"anchor": "query", "positive": "positive"},
    ],
}


@dataclass
class Examples:
    """Normalised training examples of one format, with the problems found while reading them."""

    format: str
    columns: list[str]
    rows: list[dict[str, Any]]
    origins: list[str]  # where each row came from, "file:line"
    warnings: list[str] = field(default_factory=list)


def detect_format(row: Row, columns: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Pick the format whose fields the first row carries; a user column mapping wins over detection."""
    problem = unknown_role(columns)
    if problem:
        raise DataError(f"data.columns: {problem}")
    for name, spellings in SPELLINGS.items():
        for spelling in spellings:
            mapped = {role: columns.get(role, field) for role, field in spelling.items()}
            if all(field in row.data for field in mapped.values()):
                return name, mapped
    raise DataError(
        f"{row.where}: cannot tell the format from fields {sorted(row.data)}; use query/document pairs, "
        "query/positive/negative triplets or sentence1/sentence2/score, or map yours with data.columns "
        "(e.g. data.columns.anchor=title)"
    )


def _text(value: Any, row: Row, name: str) -> str:
    return row.string(name, value, "quote it or fix the record")


def _score(value: Any, row: Row, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{row.where}: field '{name}' must be a number in [0, 1], got {value!r:.40}")
    if not 0.0 <= float(value) <= 1.0:
        raise DataError(f"{row.where}: field '{name}' is {value}, outside [0, 1]; rescale the scores to [0, 1]")
    return float(value)


def normalise(rows: list[Row], fmt: str = "auto", columns: dict[str, str] | None = None) -> Examples:
    """Turn raw rows into canonical examples of one format; every bad row names its file, line and field."""
    columns = columns or {}
    if fmt not in ("auto", *SPELLINGS):
        raise DataError(f"format '{fmt}' is unknown; use auto, {', '.join(SPELLINGS)} (or beir for a BEIR directory)")
    detected, mapping = detect_format(rows[0], columns)
    if fmt not in ("auto", detected) and not (fmt == "pairs" and detected == "triplets"):
        raise DataError(f"{rows[0].where}: data.format is '{fmt}' but the fields {sorted(rows[0].data)} are "
                        f"{detected}; set data.format=auto or map the fields with data.columns")
    if fmt == "pairs" and detected == "triplets":
        detected, mapping = "pairs", {"anchor": mapping["anchor"], "positive": mapping["positive"]}
    out, origins, warnings = [], [], []
    width = None
    for row in rows:
        for role, name in mapping.items():
            if name not in row.data or row.data[name] is None:
                raise DataError(f"{row.where}: missing field '{name}' ({detected} need "
                                f"{sorted(mapping.values())}); add it or drop the record")
        record: dict[str, Any] = {}
        if detected == "scored_pairs":
            record["sentence1"] = _text(row.data[mapping["sentence1"]], row, mapping["sentence1"])
            record["sentence2"] = _text(row.data[mapping["sentence2"]], row, mapping["sentence2"])
            record["score"] = _score(row.data[mapping["score"]], row, mapping["score"])
        else:
            record["anchor"] = _text(row.data[mapping["anchor"]], row, mapping["anchor"])
            record["positive"] = _text(row.data[mapping["positive"]], row, mapping["positive"])
            if detected == "triplets":
                negatives = row.data[mapping.get("negatives", mapping.get("negative"))]
                negatives = [negatives] if "negative" in mapping else negatives
                name = mapping.get("negatives", mapping.get("negative"))
                if not isinstance(negatives, list) or not negatives:
                    raise DataError(f"{row.where}: field '{name}' must be a non-empty list of strings")
                if width is None:
                    width = len(negatives)
                elif len(negatives) != width:
                    raise DataError(f"{row.where}: field '{name}' has {len(negatives)} negatives but earlier rows "
                                    f"have {width}; give every row the same number")
                for i, negative in enumerate(negatives, start=1):
                    record[f"negative_{i}"] = _text(negative, row, name)
        empty = [k for k, v in record.items() if isinstance(v, str) and not v.strip()]
        if empty:
            warnings.append(f"{row.where}: empty text in {empty}; the row is skipped")
            continue
        out.append(record)
        origins.append(row.where)
    if not out:
        raise DataError(f"{rows[0].path}: every record has an empty text; nothing to train on")
    return Examples(detected, list(out[0]), out, origins, warnings)
