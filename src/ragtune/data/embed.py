"""Everything `train embed` needs from data: training examples and a held-out IR collection."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ragtune.config.schema import DataSection
from ragtune.data.beir import IRData, is_beir_dir, load_beir
from ragtune.data.formats import Examples, normalise
from ragtune.errors import ConfigError, DataError
from ragtune.ingest.readers import read_rows

RELEVANT_SCORE = 0.5  # scored pairs at or above this count as relevant in the IR evaluation


@dataclass
class EmbedData:
    train: Examples
    eval: IRData


def examples_from_ir(ir: IRData) -> Examples:
    """Training pairs (query, relevant document) from a judged collection."""
    rows, origins = [], []
    for qid, docs in ir.qrels.items():
        for did, score in docs.items():
            if score > 0 and did in ir.corpus:
                rows.append({"anchor": ir.queries[qid], "positive": ir.corpus[did]})
                origins.append(f"{ir.name} query {qid}")
    if not rows:
        raise DataError(f"{ir.source or ir.name}: no positive judgements (score > 0) for documents in the corpus; "
                        "nothing to train on")
    return Examples("pairs", ["anchor", "positive"], rows, origins)


def query_and_relevant(example: dict, fmt: str) -> tuple[str, str | None]:
    if fmt == "scored_pairs":
        relevant = example["sentence2"] if example["score"] >= RELEVANT_SCORE else None
        return example["sentence1"], relevant
    return example["anchor"], example["positive"]


def example_documents(example: dict, fmt: str) -> list[str]:
    if fmt == "scored_pairs":
        return [example["sentence2"]]
    return [v for k, v in example.items() if k != "anchor"]


def ir_from_examples(held_out: Examples, everything: list[Examples]) -> IRData:
    """An IR collection: held-out queries against every document seen in train and eval."""
    doc_ids: dict[str, str] = {}
    for examples in everything:
        for example in examples.rows:
            for text in example_documents(example, examples.format):
                doc_ids.setdefault(text, f"d{len(doc_ids)}")
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for example in held_out.rows:
        query, relevant = query_and_relevant(example, held_out.format)
        if relevant is None:
            continue
        qid = query_ids.setdefault(query, f"q{len(query_ids)}")
        qrels.setdefault(qid, {})[doc_ids[relevant]] = 1
    if not qrels:
        raise DataError(f"{held_out.origins[0].rsplit(':', 1)[0]}: no held-out pair is relevant "
                        f"(score >= {RELEVANT_SCORE}); the evaluation needs at least one")
    return IRData({i: t for t, i in doc_ids.items()}, {i: q for q, i in query_ids.items()}, qrels, "held-out")


def split_by_query(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Split off a seeded fraction of queries; no query lands in both parts."""
    key = "sentence1" if examples.format == "scored_pairs" else "anchor"
    queries = sorted({row[key] for row in examples.rows})
    if len(queries) < 2:
        raise DataError(f"{examples.origins[0]}: only {len(queries)} distinct query; give data.eval or more data")
    random.Random(seed).shuffle(queries)
    held = set(queries[: max(1, round(len(queries) * fraction))])
    parts: tuple[list, list] = ([], [])
    for row, origin in zip(examples.rows, examples.origins):
        parts[row[key] in held].append((row, origin))

    def build(pairs: list) -> Examples:
        return Examples(examples.format, examples.columns, [r for r, _ in pairs], [o for _, o in pairs])

    return build(parts[0]), build(parts[1])


FEW_HELD_OUT = 50  # the smallest dev split whose verdict agreed with the test split's (benchmarks/epochs_rule.py)


def sample_queries(ir: IRData, n: int | None, seed: int) -> IRData:
    if n is None or n >= len(ir.qrels):
        return ir
    keep = sorted(random.Random(seed).sample(sorted(ir.qrels), n))
    return IRData(ir.corpus, {q: ir.queries[q] for q in keep}, {q: ir.qrels[q] for q in keep}, ir.name)


def load_embed_data(data: DataSection, seed: int = 42) -> EmbedData:
    """Read and check the training data and build the held-out evaluation, before any model is loaded."""
    if not data.train:
        raise ConfigError("data.train is not set; give a file, a folder or a BEIR directory (data.train=PATH)")
    train_path = Path(data.train)
    if data.format == "beir" or (data.format == "auto" and is_beir_dir(train_path)):
        train = examples_from_ir(load_beir(train_path, data.train_split, data.unknown_ids))
        held_out = load_beir(data.eval or train_path, data.eval_split, data.unknown_ids)
        held_texts = set(held_out.queries.values())
        keep = [i for i, r in enumerate(train.rows) if r["anchor"] not in held_texts]
        if len(keep) < len(train.rows):  # e.g. SciFact repeats 2 claim texts across train and test
            train.warnings.append(f"{train_path}: {len(train.rows) - len(keep)} training pairs whose query text is "
                                  f"also a {data.eval_split} query were dropped, so no held-out query is trained on")
            train.rows = [train.rows[i] for i in keep]
            train.origins = [train.origins[i] for i in keep]
    else:
        train = normalise(read_rows(train_path), data.format, data.columns)
        if data.eval and is_beir_dir(Path(data.eval)):  # e.g. synthetic pairs, measured on a labelled collection
            held_out = load_beir(Path(data.eval), data.eval_split, data.unknown_ids)
        else:
            if data.eval:
                evaluation = normalise(read_rows(data.eval), data.format, data.columns)
            else:
                train, evaluation = split_by_query(train, data.eval_fraction, seed)
            held_out = ir_from_examples(evaluation, [train, evaluation])
    if data.max_train_samples:
        train.rows, train.origins = train.rows[: data.max_train_samples], train.origins[: data.max_train_samples]
    held_out = sample_queries(held_out, data.max_eval_queries, seed)
    if len(held_out.queries) < FEW_HELD_OUT:
        train.warnings.insert(0, f"the held-out split has only {len(held_out.queries)} queries, too few to judge "
                                 "this run: on PubMedQA, dev splits of 6 and 15 queries rated runs better that were "
                                 "worse on the 500 test queries (benchmarks/RESULTS.md); give data.eval with "
                                 f"{FEW_HELD_OUT} or more labelled queries"
                                 + (", or raise data.max_eval_queries" if data.max_eval_queries else ""))
    return EmbedData(train, held_out)


def describe(cfg) -> str:
    """What an embed or rerank config's data holds, loaded as the recipe loads it (for `ragtune doctor`)."""
    data = load_embed_data(cfg.data, cfg.train.seed)
    return (f"{len(data.train.rows)} {data.train.format} training examples, {len(data.eval.queries)} eval queries "
            f"over {len(data.eval.corpus)} documents")
