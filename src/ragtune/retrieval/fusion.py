"""Fusion of several retrievers' rankings: RRF and weighted score fusion here, every other method through ranx.

RRF and min-max weighted sums run in plain Python per query, fast enough for serving; a test checks them
against `ranx.fuse`. The remaining ranx methods (combmnz, isr, bordafuse, ...) call `ranx.fuse` itself.
"""

from __future__ import annotations

import logging

from ragtune.config.retrieval import FusionSection
from ragtune.retrieval.base import Hits, min_max

log = logging.getLogger(__name__)

OWN = {"rrf", "wsum"}
WEIGHTED = ("wsum", "wmnz", "w_bordafuse", "w_condorcet", "mixed")  # ranx methods that take one weight per run
# ragtune's comb* names -> ranx's own (ranx calls CombMNZ "mnz", CombSUM "sum", ...).
RANX_NAMES = {"combsum": "sum", "combmnz": "mnz", "combmax": "max", "combmin": "min", "combmed": "med",
              "combanz": "anz", "combgmnz": "gmnz"}
# ranx methods whose parameters (gamma, phi, trained probabilities) ragtune does not pass.
NEEDS_PARAMS = {"gmnz", "rbc", "bayesfuse", "mapfuse", "posfuse", "probfuse", "segfuse", "slidefuse"}


def _weights(settings: FusionSection, n: int) -> list[float]:
    weights = settings.weights or [1.0] * n
    if len(weights) != n:
        from ragtune.errors import ConfigError

        raise ConfigError(f"fusion.weights has {len(weights)} values but {n} retrievers are fused; give one each")
    return weights


def _rrf(rankings: list[Hits], k: int, weights: list[float]) -> dict[str, float]:
    fused: dict[str, float] = {}
    for hits, weight in zip(rankings, weights):
        for rank, (doc, _) in enumerate(hits, start=1):
            fused[doc] = fused.get(doc, 0.0) + weight / (k + rank)
    return fused


def _wsum(rankings: list[Hits], norm: str, weights: list[float]) -> dict[str, float]:
    fused: dict[str, float] = {}
    for hits, weight in zip(rankings, weights):
        scores = dict(zip((d for d, _ in hits), min_max([s for _, s in hits]).tolist())) if norm == "min-max" \
            else dict(hits)
        for doc, score in scores.items():
            fused[doc] = fused.get(doc, 0.0) + weight * score
    return fused


def _ranked(scores: dict[str, float], k: int) -> Hits:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]


def fuse_one(rankings: list[Hits], settings: FusionSection, k: int) -> Hits:
    """Fuse one query's rankings (one list per retriever) into the top k."""
    weights = _weights(settings, len(rankings))
    if settings.method == "rrf":
        return _ranked(_rrf(rankings, settings.rrf_k, weights), k)
    if settings.method == "wsum" and settings.norm in ("min-max", "none"):
        return _ranked(_wsum(rankings, settings.norm, weights), k)
    return fuse_with_ranx([[h] for h in rankings], settings, k)[0]


def fuse(per_retriever: list[list[Hits]], settings: FusionSection, k: int) -> list[Hits]:
    """Fuse a batch: `per_retriever[r][q]` is retriever r's ranking for query q."""
    if settings.method in OWN and (settings.method == "rrf" or settings.norm in ("min-max", "none")):
        return [fuse_one(list(rankings), settings, k) for rankings in zip(*per_retriever)]
    return fuse_with_ranx(per_retriever, settings, k)


def _ranx_params(settings: FusionSection, n: int) -> dict:
    if settings.method == "rrf":
        return {"k": settings.rrf_k}
    if settings.method in WEIGHTED:
        return {"weights": _weights(settings, n)}
    return {}


def fuse_with_ranx(per_retriever: list[list[Hits]], settings: FusionSection, k: int) -> list[Hits]:
    """Any ranx fusion method over a batch of rankings."""
    from ranx import Run
    from ranx import fuse as ranx_fuse

    method = RANX_NAMES.get(settings.method, settings.method)
    if method in NEEDS_PARAMS:
        from ragtune.errors import ConfigError

        raise ConfigError(f"fusion.method '{settings.method}' needs parameters fitted on judged queries, which "
                          "ragtune does not pass; use rrf, wsum, combsum, combmnz, isr or bordafuse")
    n_queries = len(per_retriever[0])
    runs = [Run({f"q{i}": dict(h) or {"__none__": 0.0} for i, h in enumerate(hits)}) for hits in per_retriever]
    fused = ranx_fuse(runs, norm=None if settings.norm == "none" else settings.norm,
                      method=method, params=_ranx_params(settings, len(runs)))
    fused_run = fused.to_dict()  # plain dicts: ranx keeps numba typed dicts, whose get() takes no {} default
    out = []
    for i in range(n_queries):
        scores = {d: float(s) for d, s in fused_run.get(f"q{i}", {}).items() if d != "__none__"}
        out.append(_ranked(scores, k))
    return out


def tune_fusion(qrels: dict[str, dict[str, int]], per_retriever: list[dict[str, dict[str, float]]],
                settings: FusionSection, metric: str = "ndcg@10") -> FusionSection:
    """Pick the fusion parameters (RRF k, or the weights) that maximise `metric` on judged queries, with ranx."""
    from ranx import Qrels, Run, optimize_fusion

    if settings.method != "rrf" and settings.method not in WEIGHTED:
        log.warning("fusion.method %s has no k or weights to tune; keeping it as it is", settings.method)
        return settings
    judged = {q: docs for q, docs in qrels.items() if any(v > 0 for v in docs.values())}
    runs = [Run({q: run.get(q) or {"__none__": 0.0} for q in judged}) for run in per_retriever]
    method = settings.method
    best = optimize_fusion(Qrels(judged), runs, norm=None if settings.norm == "none" else settings.norm,
                           method=method, metric=metric, show_progress=False)
    update = {"rrf_k": int(best["k"])} if "k" in best else {}
    if "weights" in best:
        update["weights"] = [float(w) for w in best["weights"]]
    return settings.model_copy(update=update)
