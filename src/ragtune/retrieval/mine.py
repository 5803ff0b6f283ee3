"""Hard-negative mining over any first stage (BM25, dense, hybrid), with margins and a false-negative filter.

Queries go through the retriever in batches of `batch_size`, each asking for `range_max` candidates, so memory is
bounded by batch x range_max hits, never a query-by-corpus matrix. Built on ragtune's retrievers rather than
sentence-transformers' `mine_hard_negatives`, which is dense-only.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ragtune.config.retrieval import HardNegativesSection
from ragtune.errors import DataError
from ragtune.progress import counting
from ragtune.retrieval.base import Hits

log = logging.getLogger(__name__)

FILTERS = ("positives", "rank range", "absolute margin", "relative margin", "max score", "cross-encoder")


@dataclass
class MiningReport:
    """What mining did: how many candidates each filter removed, and what came out."""

    pairs: int = 0
    candidates: int = 0
    removed: Counter = field(default_factory=Counter)
    negatives: int = 0
    short_pairs: int = 0  # pairs left with fewer than num_negatives survivors
    random_fills: int = 0  # negatives drawn at random for short pairs (short: random)

    def lines(self) -> list[str]:
        out = [f"{self.pairs} pairs, {self.candidates} candidates retrieved"]
        out += [f"removed by {name}: {self.removed[name]}" for name in FILTERS if name in self.removed]
        out.append(f"kept {self.negatives} negatives; {self.short_pairs} pairs had fewer than asked")
        if self.random_fills:
            out.append(f"{self.random_fills} random documents filled up the short pairs")
        return out


def _positive_scores(retriever, queries: list[str], positive_ids: list[str], found: list[dict[str, float]]):
    """The retriever's score of each pair's positive (from the candidates, else computed directly)."""
    scores = np.full(len(queries), -np.inf, dtype=np.float64)
    missing = []
    for i, (pos, hits) in enumerate(zip(positive_ids, found)):
        if pos in hits:
            scores[i] = hits[pos]
        else:
            missing.append(i)
    if not missing:
        return scores
    pair_scores = getattr(retriever, "pair_scores", None)
    if pair_scores is not None:  # BM25 and dense can score any pair
        scores[missing] = pair_scores([queries[i] for i in missing], [positive_ids[i] for i in missing])
    # A fused (hybrid) score exists only inside the fused list: a positive outside it ranks below every candidate.
    return scores


def _filter(candidates: Hits, positive: float, settings: HardNegativesSection, report: MiningReport) -> Hits:
    kept = []
    for doc, score in candidates:
        if settings.absolute_margin is not None and score > positive - settings.absolute_margin:
            report.removed["absolute margin"] += 1
        elif settings.relative_margin is not None and score > positive * (1 - settings.relative_margin):
            report.removed["relative margin"] += 1
        elif settings.max_score is not None and score > settings.max_score:
            report.removed["max score"] += 1
        else:
            kept.append((doc, score))
    return kept


def _drop_false_negatives(reranker, query: str, positive: str, pool: Hits, corpus: dict[str, str],
                          settings: HardNegativesSection, report: MiningReport) -> Hits:
    """Drop candidates the cross-encoder scores at or above the positive (minus the margin)."""
    scores = reranker.score(query, [positive] + [corpus[d] for d, _ in pool])
    bar = scores[0] - settings.cross_encoder_margin
    kept = [hit for hit, s in zip(pool, scores[1:]) if s < bar]
    report.removed["cross-encoder"] += len(pool) - len(kept)
    return kept


def _rows(query: str, positive: str, negatives: list[str], output: str) -> list[dict]:
    if output == "triplets":
        return [{"query": query, "positive": positive, "negative": n} for n in negatives]
    if output == "labeled_pairs":
        return [{"query": query, "document": positive, "label": 1}] + \
               [{"query": query, "document": n, "label": 0} for n in negatives]
    return [{"query": query, "positive": positive, "negatives": negatives}]


def _random_documents(ids: list[str], exclude: set[str], n: int, rng: random.Random) -> Hits:
    """Up to `n` document ids drawn at random from `ids`, none of them in `exclude`."""
    found: Hits = []
    for _ in range(20 * n):  # rejection sampling: the excluded set is small against the corpus
        if len(found) == n or len(exclude) >= len(ids):
            break
        doc = rng.choice(ids)
        if doc not in exclude:
            found.append((doc, float("-inf")))
            exclude = exclude | {doc}
    return found


def mine(pairs: list[tuple[str, str]], corpus: dict[str, str], retriever, settings: HardNegativesSection,
         reranker=None, known_positives: dict[str, set[str]] | None = None) -> tuple[list[dict], MiningReport]:
    """Mine negatives for (query, positive text) pairs; every positive must be a document of `corpus`.

    `known_positives` maps a query text to every document id judged relevant to it; none becomes a negative.
    Returns rows in `settings.output` format and a report of what each filter removed.
    """
    ids_of: dict[str, list[str]] = {}  # a text may be stored under several ids (duplicated documents)
    for doc, text in corpus.items():
        ids_of.setdefault(text, []).append(doc)
    doc_of = {text: ids[0] for text, ids in ids_of.items()}
    missing = [p for _, p in pairs if p not in doc_of]
    if missing:
        raise DataError(f"{len(missing)} positives are not in the mining corpus (first: {missing[0][:60]!r}); "
                        "give the corpus they come from")
    known = {q: set(ids) for q, ids in (known_positives or {}).items()}
    for query, positive in pairs:  # every copy of a positive's text is a positive, never a negative
        known.setdefault(query, set()).update(ids_of[positive])
    rng = random.Random(settings.seed)
    doc_ids = list(corpus)
    report = MiningReport(pairs=len(pairs))
    rows: list[dict] = []
    with counting("Mining hard negatives", len(pairs)) as advance:
        for start in range(0, len(pairs), settings.batch_size):
            batch = pairs[start:start + settings.batch_size]
            queries = [q for q, _ in batch]
            depth = settings.range_max + max(len(known[q]) for q in queries)
            hits = retriever.search(queries, depth)
            positive_ids = [doc_of[p] for _, p in batch]
            positive_scores = _positive_scores(retriever, queries, positive_ids, [dict(h) for h in hits])
            for (query, positive), ranked, pos_score in zip(batch, hits, positive_scores):
                report.candidates += len(ranked)
                candidates = [(d, s) for d, s in ranked if d not in known[query]]
                report.removed["positives"] += len(ranked) - len(candidates)
                in_range = candidates[settings.range_min:settings.range_max]
                report.removed["rank range"] += len(candidates) - len(in_range)
                pool = _filter(in_range, float(pos_score), settings, report)
                if settings.sampling == "random":
                    pool = rng.sample(pool, len(pool))
                chosen: Hits = []
                while pool and len(chosen) < settings.num_negatives:  # rescore only as many as needed
                    take, pool = pool[:settings.num_negatives - len(chosen)], pool[settings.num_negatives - len(chosen):]
                    if reranker is not None:
                        take = _drop_false_negatives(reranker, query, positive, take, corpus, settings, report)
                    chosen += take
                if len(chosen) < settings.num_negatives:
                    report.short_pairs += 1
                    if settings.short == "random":
                        # From outside the retrieved list first: what the filters took out there may be unlabelled
                        # positives. A corpus too small for that (all of it retrieved) gives any non-positive.
                        for exclude in (known[query] | {d for d, _ in ranked}, known[query]):
                            fill = _random_documents(doc_ids, exclude | {d for d, _ in chosen},
                                                     settings.num_negatives - len(chosen), rng)
                            chosen += fill
                            report.random_fills += len(fill)
                    if len(chosen) < settings.num_negatives and (settings.output == "ntuples" or not chosen):
                        continue  # n-tuples need the same width on every row
                report.negatives += len(chosen)
                rows += _rows(query, positive, [corpus[d] for d, _ in chosen], settings.output)
            advance(len(batch))
    if not rows:
        raise DataError(f"mining kept no negatives for any of {len(pairs)} pairs ({'; '.join(report.lines()[1:])}); "
                        "loosen the margins or raise range_max")
    return rows, report


def build_mining_retriever(spec: str, corpus: dict[str, str], base_model: str | None = None, placement=None,
                           settings: HardNegativesSection | None = None):
    """The first stage named by `spec` over `corpus`, with the BM25, dense and fusion settings of `settings`;
    `dense:base` means `base_model`. Encoding the corpus is counted (it is most of mining's time)."""
    from ragtune.config.retrieval import FirstStageSettings, RetrievalConfig
    from ragtune.retrieval.pipeline import PipelineBuilder
    from ragtune.retrieval.spec import parse_spec

    if base_model is not None:
        spec = spec.replace("dense:base", f"dense:{base_model}")
    parsed = parse_spec(spec, where="hard_negatives.first_stage")
    if parsed.reranker:
        raise DataError(f"hard_negatives.first_stage '{spec}': a mining retriever has no reranker; use "
                        "hard_negatives.cross_encoder to filter false negatives instead")
    settings = settings or HardNegativesSection()
    config = RetrievalConfig(**{name: getattr(settings, name) for name in FirstStageSettings.model_fields})
    return PipelineBuilder(corpus, config, placement=placement, show_progress=True).build(parsed).first


def log_report(report: MiningReport) -> None:
    for line in report.lines():
        log.info("hard negatives: %s", line)


def mine_for_training(examples, corpus: dict[str, str], settings: HardNegativesSection, retriever,
                      reranker=None):
    """Training examples with mined negatives: pairs in, (anchor, positive, negative_1..n) out."""
    from ragtune.data.formats import Examples
    from ragtune.errors import ConfigError

    if examples.format not in ("pairs", "triplets"):
        raise ConfigError(f"data.hard_negatives needs (query, positive) pairs, but the data is {examples.format}; "
                          "remove data.hard_negatives or give pairs")
    if settings.output == "labeled_pairs":
        raise ConfigError("data.hard_negatives.output=labeled_pairs is for rerankers; use ntuples or triplets here")
    pairs = list(dict.fromkeys((r["anchor"], r["positive"]) for r in examples.rows))
    mined, report = mine(pairs, corpus, retriever, settings, reranker)
    log_report(report)
    rows = []
    for row in mined:
        negatives = row["negatives"] if "negatives" in row else [row["negative"]]
        rows.append({"anchor": row["query"], "positive": row["positive"],
                     **{f"negative_{i}": n for i, n in enumerate(negatives, start=1)}})
    return Examples("triplets", list(rows[0]), rows, [f"mined from {examples.origins[0]}"] * len(rows),
                    examples.warnings), report


def mining_tools(settings: HardNegativesSection, corpus: dict[str, str], base_model: str | None, placement):
    """The retriever (and optional cross-encoder) a mining config asks for, built over `corpus`."""
    retriever = build_mining_retriever(settings.first_stage, corpus, base_model, placement, settings)
    reranker = None
    if settings.cross_encoder:
        from ragtune.models.load import load_cross_encoder
        from ragtune.retrieval.rerank import Reranker

        reranker = Reranker(load_cross_encoder(settings.cross_encoder, placement), placement)
    return retriever, reranker


def load_mining_input(data: str, corpus: str | None = None, split: str = "train", fmt: str = "auto",
                      columns: dict[str, str] | None = None,
                      unknown_ids: str = "error") -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(query, positive) pairs and the corpus to mine from: a BEIR directory, or a pairs file plus an optional
    corpus (a corpus.jsonl, or a BEIR directory); without one, the pairs' own documents form the corpus."""
    from pathlib import Path

    from ragtune.data.beir import _documents, is_beir_dir, load_beir
    from ragtune.data.embed import examples_from_ir
    from ragtune.data.formats import normalise
    from ragtune.ingest.readers import read_rows

    if is_beir_dir(data):
        ir = load_beir(data, split, unknown_ids)
        examples, documents = examples_from_ir(ir), ir.corpus
    else:
        examples = normalise(read_rows(data), fmt, columns)
        documents = {}
    if examples.format not in ("pairs", "triplets"):
        raise DataError(f"{data}: mining needs (query, positive) pairs, but the data is {examples.format}")
    pairs = list(dict.fromkeys((r["anchor"], r["positive"]) for r in examples.rows))
    if corpus:
        documents = load_beir(corpus, split, unknown_ids).corpus if is_beir_dir(corpus) else _documents(Path(corpus), True)
        known = set(documents.values())
        missing = [p for _, p in pairs if p not in known]
        if missing:  # a corpus that lacks the positives was chunked or cleaned differently: mining it would mislead
            raise DataError(f"{corpus}: {len(missing)} of {len(pairs)} positives in {data} are not documents of this "
                            f"corpus (first: {missing[0][:60]!r}); give the corpus they come from")
        return pairs, documents
    known = set(documents.values())
    for _, positive in pairs:
        if positive not in known:
            documents[f"positive-{len(documents)}"] = positive
            known.add(positive)
    return pairs, documents


def mine_to_file(data: str, out: str, settings: HardNegativesSection, corpus: str | None = None,
                 split: str = "train", device: str = "auto", precision: str = "auto",
                 unknown_ids: str = "error") -> MiningReport:
    """`ragtune data mine`: read pairs, mine, write JSONL atomically; return the report."""
    import json

    from ragtune.models.device import choose_placement
    from ragtune.utils import write_atomic

    pairs, documents = load_mining_input(data, corpus, split, unknown_ids=unknown_ids)
    placement = choose_placement(device, precision)
    retriever, reranker = mining_tools(settings, documents, None, placement)
    rows, report = mine(pairs, documents, retriever, settings, reranker)
    write_atomic(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return report
