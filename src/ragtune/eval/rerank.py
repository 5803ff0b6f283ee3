"""Reranker evaluation: a fixed first stage proposes candidates once; each evaluation reranks them.

'Before' is the first stage alone, 'after' the first stage plus the reranker, on the same queries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ragtune.config.rerank import RerankEvalSection
from ragtune.config.retrieval import RerankSection, RetrievalConfig
from ragtune.data.beir import IRData
from ragtune.eval.metrics import mean_scores, query_scores
from ragtune.eval.report import PerExample, ScoreBook, greater_is_better
from ragtune.models.device import Placement
from ragtune.retrieval.base import Hits, to_run
from ragtune.retrieval.dense import forget_copy

log = logging.getLogger(__name__)


@dataclass
class Candidates:
    """First-stage hits for every eval query."""

    ir: IRData
    query_ids: list[str]
    hits: list[Hits]
    spec: str

    @classmethod
    def build(cls, ir: IRData, cfg: RerankEvalSection, placement: Placement) -> Candidates:
        from ragtune.retrieval.pipeline import PipelineBuilder
        from ragtune.retrieval.spec import parse_spec

        spec = parse_spec(cfg.first_stage, where="eval.first_stage")
        config = RetrievalConfig(device=placement.device, precision=placement.precision)
        first = PipelineBuilder(ir.corpus, config, placement).build(spec)
        query_ids = list(ir.queries)
        depth = max(max(cfg.ks), cfg.rerank_k)
        hits = first.search([ir.queries[q] for q in query_ids], depth)
        # Ties go by id, as the metrics break them, so 'before' and the reranked tail rank tied documents alike.
        return cls(ir, query_ids, [sorted(h, key=lambda item: (-item[1], item[0])) for h in hits], spec.text)

    def first_stage_scores(self, cfg: RerankEvalSection) -> PerExample:
        return query_scores(self.ir.qrels, to_run(self.query_ids, self.hits), cfg.metrics, cfg.ks)

    def reranked_scores(self, model, cfg: RerankEvalSection, placement: Placement) -> PerExample:
        """Rerank the top `rerank_k` of every query with `model` (its weights as they are now): a cross-encoder,
        or a late-interaction model (MaxSim); every metric of every judged query."""
        reranker = second_stage(model, cfg, placement)
        reranked = [reranker.rerank(self.ir.queries[q], hits, self.ir.corpus, cfg.rerank_k)
                    for q, hits in zip(self.query_ids, self.hits)]
        return query_scores(self.ir.qrels, to_run(self.query_ids, reranked), cfg.metrics, cfg.ks)


def second_stage(model, cfg: RerankEvalSection, placement: Placement):
    """The reranker that runs `model`: MaxSim for a MultiVectorEncoder, else the cross-encoder Reranker."""
    if type(model).__name__ == "MultiVectorEncoder":
        from ragtune.retrieval.maxsim import MaxSimReranker

        return MaxSimReranker(model, placement, batch_size=cfg.batch_size)
    from ragtune.retrieval.rerank import Reranker

    sizes = {"batch_size": cfg.batch_size} if cfg.batch_size else {}  # else the reranker's own default
    return Reranker(model, placement, RerankSection(**sizes))


def rerank_evaluator(candidates: Candidates, cfg: RerankEvalSection, placement: Placement, book: ScoreBook):
    """A sentence-transformers evaluator that reranks the fixed candidates, for best-checkpoint selection; each
    step's per-query scores go into `book`."""
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class RerankEvaluator(BaseEvaluator):
        def __init__(self):
            super().__init__()
            self.primary_metric = cfg.primary_metric
            self.greater_is_better = greater_is_better(cfg.primary_metric)

        def __call__(self, model, output_path=None, epoch=-1, steps=-1):
            forget_copy(model)  # trained since the last call, by a step that may not bump weight versions
            scores = candidates.reranked_scores(model, cfg, placement)
            book.keep(steps, scores)
            metrics = mean_scores(scores)
            log.info("evaluation at step %s: %s=%.4f", steps, cfg.primary_metric, metrics[cfg.primary_metric])
            return metrics

        def get_config_dict(self):
            return {"collection": candidates.ir.name, "first_stage": candidates.spec,
                    "rerank_k": cfg.rerank_k, "queries": len(candidates.query_ids)}

    return RerankEvaluator()
