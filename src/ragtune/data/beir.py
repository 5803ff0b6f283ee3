"""BEIR directories: corpus.jsonl, queries.jsonl and qrels/{split}.tsv."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ragtune.errors import DataError, MissingPathError
from ragtune.ingest.readers import read_rows, read_text, text_lines

log = logging.getLogger(__name__)


@dataclass
class IRData:
    """A retrieval test collection: documents, queries and graded relevance judgements."""

    corpus: dict[str, str]  # doc id -> text
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}
    name: str = ""
    source: str = ""  # the judgements file, for error messages


def is_beir_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def _field(row, name: str) -> str:
    value = row.data.get(name)
    if value is None:
        raise DataError(f"{row.where}: missing field '{name}'; every BEIR record needs _id and text")
    if name == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return row.string(name, value)


def _documents(path: Path, with_title: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    lines: dict[str, int | None] = {}
    for row in read_rows(path):
        text = _field(row, "text")
        title = row.string("title", row.data.get("title") or "") if with_title else ""
        key = _field(row, "_id")
        if key in lines:
            raise DataError(f"{row.where}: _id '{key}' already appears at line {lines[key]}; give every record its "
                            "own _id (judgements name records by it)")
        lines[key] = row.line
        out[key] = f"{title} {text}".strip() if title else text
    return out


def corpus_metadata(path: str | Path):
    """(id, source, title, page, metadata) of every corpus record, for metadata filters: the metadata is the
    record's own `metadata` object plus its other fields (everything but _id, title and text)."""
    for row in read_rows(path):
        own = row.data.get("metadata")
        extra = {k: v for k, v in row.data.items() if k not in ("_id", "title", "text", "metadata")}
        yield _field(row, "_id"), str(path), row.data.get("title") or "", None, {
            **(own if isinstance(own, dict) else {}), **extra}


def restrict(ir: IRData, allowed: frozenset[str]) -> IRData:
    """The collection as a filter leaves it: judgements of the allowed documents only, and only the queries left
    with a relevant one (the others have nothing to find). The corpus stays whole: retrieval skips the rest."""
    qrels = {q: {d: s for d, s in docs.items() if d in allowed} for q, docs in ir.qrels.items()}
    qrels = {q: docs for q, docs in qrels.items() if any(s > 0 for s in docs.values())}
    if len(qrels) < len(ir.qrels):
        log.info("the filter keeps %d of %d documents; %d of %d queries still have a relevant one", len(allowed),
                 len(ir.corpus), len(qrels), len(ir.qrels))
    if not qrels:
        raise DataError(f"{ir.source or ir.name}: the filter leaves no query with a relevant document "
                        f"({len(allowed)} of {len(ir.corpus)} documents kept); widen the filter")
    return IRData(ir.corpus, {q: ir.queries[q] for q in qrels}, qrels, ir.name, ir.source)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read a TREC/BEIR qrels TSV (`query-id  corpus-id  score`, optional header)."""
    if not path.is_file():
        splits = sorted(p.stem for p in path.parent.glob("*.tsv"))
        raise MissingPathError(f"{path}: no such qrels file; this collection has splits {splits}")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(text_lines(read_text(path)), start=1):
        line = line.strip()
        parts = line.split("\t") if "\t" in line else line.split()
        if not line.strip() or (number == 1 and parts[-1].strip() == "score"):
            continue
        if len(parts) == 4:  # TREC: qid, iteration, docid, rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataError(f"{path}:{number}: expected 3 tab-separated columns query-id, corpus-id, score; "
                            f"got {len(parts)}")
        try:
            score = int(float(parts[2]))
        except ValueError:
            raise DataError(f"{path}:{number}: field 'score' must be an integer, got {parts[2]!r}") from None
        qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = score
    if not qrels:
        raise DataError(f"{path}: no judgements; the qrels file is empty")
    return qrels


def _check_ids(qrels: dict[str, dict[str, int]], queries: dict[str, str], corpus: dict[str, str], source: str,
               unknown_ids: str) -> dict[str, dict[str, int]]:
    """Count judgements naming unknown queries or documents; reject them, or skip them with a warning."""
    if unknown_ids not in ("error", "skip"):
        from ragtune.errors import ConfigError

        raise ConfigError(f"--unknown-ids '{unknown_ids}': use error or skip")
    bad_queries = [q for q in qrels if q not in queries]
    bad_docs = [(q, d) for q, docs in qrels.items() if q in queries for d in docs if d not in corpus]
    if not bad_queries and not bad_docs:
        return qrels
    parts = []
    if bad_queries:
        parts.append(f"{len(bad_queries)} unknown query ids (first: {bad_queries[0]!r}, not in queries.jsonl)")
    if bad_docs:
        parts.append(f"{len(bad_docs)} judgements of unknown document ids (first: {bad_docs[0][1]!r}, "
                     "not in corpus.jsonl)")
    found = "; ".join(parts)
    if unknown_ids == "error":
        raise DataError(f"{source}: {found}; the files do not belong together, or pass --unknown-ids skip "
                        "(data.unknown_ids=skip in a train config) to drop those judgements")
    log.warning("%s: %s; skipped", source, found)
    kept = {q: {d: s for d, s in docs.items() if d in corpus} for q, docs in qrels.items() if q in queries}
    kept = {q: docs for q, docs in kept.items() if docs}
    if not kept:
        raise DataError(f"{source}: no judgement is left after skipping unknown ids; check the ids")
    return kept


def load_beir(path: str | Path, split: str, unknown_ids: str = "error") -> IRData:
    """Load a BEIR collection restricted to the queries judged in `split`."""
    path = Path(path)
    if not is_beir_dir(path):
        raise DataError(f"{path}: not a BEIR directory; it needs corpus.jsonl, queries.jsonl and qrels/{split}.tsv")
    qrels_path = path / "qrels" / f"{split}.tsv"
    return load_collection(path / "corpus.jsonl", path / "queries.jsonl", qrels_path, unknown_ids,
                           name=f"{path.name}/{split}")


def load_collection(corpus_path: str | Path, queries_path: str | Path, qrels_path: str | Path,
                    unknown_ids: str = "error", name: str | None = None) -> IRData:
    """Load a judged collection from a corpus file, a queries file and a qrels TSV."""
    qrels = read_qrels(Path(qrels_path))
    corpus = _documents(Path(corpus_path), with_title=True)
    if not corpus:
        raise DataError(f"{corpus_path}: the corpus is empty; give at least one document")
    queries = _documents(Path(queries_path), with_title=False)
    qrels = _check_ids(qrels, queries, corpus, str(qrels_path), unknown_ids)
    return IRData(corpus, {q: queries[q] for q in qrels}, qrels, name=name or Path(qrels_path).stem,
                  source=str(qrels_path))
