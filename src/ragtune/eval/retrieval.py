"""Retrieval evaluation: pipelines side by side on one judged collection, with latency and significance."""

from __future__ import annotations

import logging
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import numpy as np

from ragtune.config.base import PromptsSection
from ragtune.config.retrieval import DenseSection, RetrievalConfig
from ragtune.config.schema import EvalSection
from ragtune.data.beir import IRData
from ragtune.eval.metrics import ir_metrics, mean_scores, per_query, query_scores
from ragtune.eval.report import PerExample, ScoreBook, greater_is_better
from ragtune.models.device import Placement
from ragtune.models.fingerprint import weights_digest
from ragtune.retrieval.base import Allowed, to_run
from ragtune.retrieval.dense import forget_copy
from ragtune.retrieval.pipeline import HybridRetriever, Pipeline, PipelineBuilder, check_weights
from ragtune.retrieval.spec import parse_spec

log = logging.getLogger(__name__)

HEADLINE = ["ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100"]


@dataclass
class PipelineResult:
    name: str
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    queries: int = 0
    documents: int = 0
    significance: dict | None = None  # paired test against the first pipeline
    fusion: dict | None = None  # the fusion settings used (tuned ones with --tune-fusion)
    per_query: dict[str, float] | None = None  # the primary metric of each judged query (results.html's wins/losses)
    scores: PerExample | None = None  # every metric of every judged query (training's paired before/after test)


class LastCorpus:
    """The corpus vectors of a model's latest evaluation during training, with a digest of the weights that made
    them: once final/ is saved, they go into the embedding cache as its vectors if those weights are final's."""

    def __init__(self):
        self.retriever, self.texts, self.digest = None, [], None

    def keep(self, model, retriever, texts: list[str]) -> None:
        self.retriever, self.texts, self.digest = retriever, texts, weights_digest(model)

    def cache_as(self, model, saved: str) -> bool:
        """Cache the kept vectors as `saved`'s when `model` (the weights written there) still has the weights that
        encoded them; True when it did."""
        if self.retriever is None or weights_digest(model) != self.digest:
            return False
        stored = self.retriever.cache_as(saved, self.texts)
        if stored:
            log.info("the tuned model's corpus embeddings (%d texts) are cached for %s", len(self.texts), saved)
        return stored


def evaluate_model(model, ir: IRData, cfg: EvalSection, placement: Placement,
                   prompts: PromptsSection | None = None, show_progress: bool = False,
                   cache_as: str | None = None, last: LastCorpus | None = None) -> PipelineResult:
    """Exact dense retrieval with an in-memory `model` over the whole corpus.

    `cache_as` names the folder the weights were loaded from; give it only while they are unchanged (before
    training), so the document embeddings may come from, and go to, the on-disk cache. `last` keeps this
    evaluation's corpus vectors, for the cache once the weights are saved (`LastCorpus.cache_as`).
    """
    from ragtune.retrieval.dense import DenseRetriever

    settings = DenseSection(batch_size=cfg.batch_size, cache=cache_as is not None,
                            prompts=prompts or PromptsSection())
    retriever = DenseRetriever.build(ir.corpus, model, placement, settings, model_path=cache_as,
                                     show_progress=show_progress)
    if last is not None:
        last.keep(model, retriever, [ir.corpus[d] for d in ir.corpus])
    query_ids = list(ir.queries)
    hits = retriever.search([ir.queries[q] for q in query_ids], max(cfg.ks))
    scores = query_scores(ir.qrels, to_run(query_ids, hits), cfg.metrics, cfg.ks)
    return PipelineResult("dense", mean_scores(scores), queries=len(ir.queries), documents=len(ir.corpus),
                          scores=scores)


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    p50, p95 = np.percentile(np.array(values), [50, 95])
    return round(float(p50), 2), round(float(p95), 2)


def run_pipeline(pipeline: Pipeline, ir: IRData, k: int, allowed: Allowed = None) -> tuple[dict, dict[str, float]]:
    """Answer every query one at a time (as a service would), from the `allowed` documents alone where a filter
    gives them, and time each stage."""
    first_ms, rerank_ms, total_ms, hits = [], [], [], []
    query_ids = list(ir.queries)
    for qid in query_ids:
        ranked, first, rerank = pipeline.search_timed(ir.queries[qid], k, allowed)
        hits.append(ranked)
        first_ms.append(first)
        rerank_ms.append(rerank)
        total_ms.append(first + rerank)
    timings = {"index_build_s": round(pipeline.build_seconds, 2)}
    for label, values in (("first_stage", first_ms), ("rerank", rerank_ms), ("query", total_ms)):
        timings[f"{label}_p50_ms"], timings[f"{label}_p95_ms"] = _percentiles(values)
    return to_run(query_ids, hits), timings


def _tune(pipeline: Pipeline, tune: IRData, metric: str, rerank_queries: int = 100) -> None:
    """Fit the hybrid first stage's fusion parameters, then the reranker's first-stage weight, on the tuning split.

    The reranker's weight is fitted on a seeded sample of `rerank_queries` queries (a cross-encoder is slow);
    metric is the pipeline's primary metric, grid 0, 0.1, ..., 0.9.
    """
    from ragtune.retrieval.fusion import tune_fusion

    stage = pipeline.first
    if isinstance(stage, HybridRetriever):
        query_ids = list(tune.queries)
        per_part = stage.part_rankings([tune.queries[q] for q in query_ids], stage.settings.depth)
        stage.settings = tune_fusion(tune.qrels, [to_run(query_ids, hits) for hits in per_part], stage.settings,
                                     metric)
        log.info("fusion for %s tuned on %s: %s", pipeline.name, tune.name, stage.settings.model_dump())
    if pipeline.reranker is None:
        return
    from ragtune.data.embed import sample_queries
    from ragtune.retrieval.rerank import order

    sample = sample_queries(tune, rerank_queries, seed=0)
    query_ids = list(sample.queries)
    k = pipeline.rerank_k
    firsts = pipeline.first.search([sample.queries[q] for q in query_ids], max(k, 100))
    scored = [(hits[:k], pipeline.reranker.score(sample.queries[q], [sample.corpus[d] for d, _ in hits[:k]]),
               hits[k:]) for q, hits in zip(query_ids, firsts)]
    name, cut = metric.split("@")
    best = max((round(w, 1) for w in np.arange(0, 1, 0.1)), key=lambda w: ir_metrics(
        sample.qrels, to_run(query_ids, [order(h, s, t, w) for h, s, t in scored]), [name], [int(cut)])[metric])
    pipeline.reranker.settings = pipeline.reranker.settings.model_copy(update={"first_stage_weight": best})
    log.info("reranker's first-stage weight for %s tuned on %d %s queries: %.1f", pipeline.name, len(query_ids),
             tune.name, best)


def significance(qrels: dict, runs: list[dict], metrics: list[str], test: str = "student",
                 max_p: float = 0.05) -> list[dict | None]:
    """A paired test of every run against the first (ranx `compare`); None for the first itself."""
    from ranx import Qrels, Run, compare

    judged = {q: d for q, d in qrels.items() if any(v > 0 for v in d.values())}
    named = [Run({q: run.get(q) or {"__none__": 0.0} for q in judged}, name=f"p{i}") for i, run in enumerate(runs)]
    with warnings.catch_warnings():  # scipy warns on per-query differences that are all equal; the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        report = compare(Qrels(judged), named, metrics=metrics, stat_test=test, max_p=max_p).to_dict()
    out: list[dict | None] = [None]
    for i in range(1, len(runs)):
        # A test over identical per-query scores has no p-value (ranx gives NaN, which is not valid JSON): None.
        p_values = {m: None if np.isnan(p) else float(p) for m, p in report[f"p{i}"]["comparisons"]["p0"].items()}
        scores, base = report[f"p{i}"]["scores"], report["p0"]["scores"]
        significant = {m: p_values[m] is not None and p_values[m] < max_p for m in metrics}
        out.append({"against": 0, "test": test, "max_p": max_p, "p_values": p_values,
                    "better": {m: bool(significant[m] and scores[m] > base[m]) for m in metrics},
                    "worse": {m: bool(significant[m] and scores[m] < base[m]) for m in metrics}})
    return out


def evaluate_pipelines(ir: IRData, specs: list[str], config: RetrievalConfig | None = None,
                       eval_cfg: EvalSection | None = None, tune: IRData | None = None, stat_test: str = "student",
                       show_progress: bool = False, reporter=None, allowed: Allowed = None) -> list[PipelineResult]:
    """Evaluate every pipeline spec on the same collection, in order; the first row is the baseline. With
    `allowed` (the documents a metadata filter keeps), every pipeline searches those alone and is judged on the
    queries that still have a relevant one among them."""
    from ragtune.models.resolve import resolve_model
    from ragtune.progress import Reporter

    config, eval_cfg, reporter = config or RetrievalConfig(), eval_cfg or EvalSection(), reporter or Reporter()
    parsed = [parse_spec(spec) for spec in specs]
    for spec in parsed:  # every model must resolve, and every hybrid fit its weights, before anything loads
        for _, model in spec.models():
            resolve_model(model)
        if spec.kind == "hybrid":
            check_weights(config.fusion, len(spec.parts), spec.text)
    if allowed is not None:
        from ragtune.data.beir import restrict

        ir = restrict(ir, allowed)
    builder = PipelineBuilder(ir.corpus, config, show_progress=show_progress)
    k = max(eval_cfg.ks)
    results, runs = [], []
    for spec in parsed:
        with reporter.phase(f"Evaluating {spec.text}"):
            pipeline = builder.build(spec)
            if tune is not None:
                _tune(pipeline, tune, eval_cfg.primary_metric)
            run, timings = run_pipeline(pipeline, ir, k, allowed)
        fusion = pipeline.first.settings.model_dump() if isinstance(pipeline.first, HybridRetriever) else None
        if pipeline.reranker is not None:
            fusion = {**(fusion or {}), "rerank_first_stage_weight": pipeline.reranker.settings.first_stage_weight}
        results.append(PipelineResult(spec.text, ir_metrics(ir.qrels, run, eval_cfg.metrics, eval_cfg.ks), timings,
                                      len(ir.queries), len(ir.corpus if allowed is None else allowed), fusion=fusion,
                                      per_query=per_query(ir.qrels, run, eval_cfg.primary_metric)))
        runs.append(run)
    if len(runs) > 1:
        tested = [m for m in HEADLINE if m in results[0].metrics]
        for result, test in zip(results, significance(ir.qrels, runs, tested, stat_test)):
            result.significance = test
    return results


def ir_evaluator(ir: IRData, cfg: EvalSection, placement: Placement, prompts: PromptsSection | None = None,
                 around: Callable[[], ContextManager] = nullcontext, book: ScoreBook | None = None,
                 last: LastCorpus | None = None):
    """A sentence-transformers evaluator that runs `evaluate_model` (inside `around()`), for best-checkpoint
    selection in training; each step's per-query scores go into `book`."""
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class IREvaluator(BaseEvaluator):
        def __init__(self):
            super().__init__()
            self.primary_metric = cfg.primary_metric
            self.greater_is_better = greater_is_better(cfg.primary_metric)

        def __call__(self, model, output_path=None, epoch=-1, steps=-1):
            forget_copy(model)  # trained since the last call, by a step that may not bump weight versions
            with around():
                result = evaluate_model(model, ir, cfg, placement, prompts, last=last)
            if book is not None:
                book.keep(steps, result.scores)
            log.info("evaluation at step %s: %s=%.4f", steps, cfg.primary_metric, result.metrics[cfg.primary_metric])
            return result.metrics

        def get_config_dict(self):
            return {"collection": ir.name, "queries": len(ir.queries), "documents": len(ir.corpus)}

    return IREvaluator()
