"""IR metrics (trec_eval/ranx definitions), in plain numpy.

ranx computes the same numbers, but its numba kernels take minutes to compile on a fresh 2-core machine, which
would dominate a 3-minute quickstart. A test checks every metric here against ranx. Relevance is graded: a judgement
above 0 is relevant, nDCG uses linear gain. accuracy@k is ranx's hit_rate@k (at least one relevant in the top k).
"""

from __future__ import annotations

import numpy as np

GREATER_IS_BETTER = True  # every IR metric here


def metric_names(metrics: list[str], ks: list[int]) -> list[str]:
    return [f"{m}@{k}" for m in metrics for k in ks]


def _ranked(scores: dict[str, float]) -> list[str]:
    """Document ids by descending score; ties go by id, so results do not depend on dict order."""
    return [d for d, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def _query_metrics(judged: dict[str, int], ranking: list[str], metrics: list[str], ks: list[int]) -> list[float]:
    gains = np.array([judged.get(d, 0) for d in ranking[: max(ks)]], dtype=np.float64)
    hits = gains > 0
    n_relevant = len(judged)
    discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
    ideal = np.sort(np.array(list(judged.values()), dtype=np.float64))[::-1]
    ideal_discounts = 1.0 / np.log2(np.arange(2, len(ideal) + 2))
    cum_hits = np.cumsum(hits)
    precisions_at_hits = np.where(hits, cum_hits / np.arange(1, len(hits) + 1), 0.0)
    first_hit = int(np.argmax(hits)) if hits.any() else None
    out = []
    for metric in metrics:
        for k in ks:
            top = slice(0, k)
            if metric == "ndcg":
                idcg = float(np.sum(ideal[:k] * ideal_discounts[:k]))
                value = float(np.sum(gains[top] * discounts[top])) / idcg
            elif metric == "mrr":
                value = 1.0 / (first_hit + 1) if first_hit is not None and first_hit < k else 0.0
            elif metric == "map":
                value = float(np.sum(precisions_at_hits[top])) / n_relevant
            elif metric == "recall":
                value = float(np.sum(hits[top])) / n_relevant
            elif metric == "precision":
                value = float(np.sum(hits[top])) / k
            elif metric == "accuracy":
                value = float(np.any(hits[top]))
            else:
                raise ValueError(f"unknown IR metric '{metric}'")
            out.append(value)
    return out


def query_scores(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics: list[str],
                 ks: list[int]) -> dict[str, dict[str, float]]:
    """Every METRIC@K of every query with at least one relevant judgement, {name: {query id: value}} (an
    unanswered query scores 0): what ir_metrics averages and the paired tests compare."""
    names = metric_names(metrics, ks)
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    for qid, docs in qrels.items():
        judged = {d: s for d, s in docs.items() if s > 0}
        if judged:
            for name, value in zip(names, _query_metrics(judged, _ranked(run.get(qid, {})), metrics, ks)):
                out[name][qid] = value
    return out


def mean_scores(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over its examples, rounded to 6 places (0 for a metric with none)."""
    return {name: round(float(np.mean(list(values.values()))), 6) if values else 0.0
            for name, values in scores.items()}


def per_query(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metric: str) -> dict[str, float]:
    """`metric` (METRIC@K) for each query with at least one relevant judgement, as ir_metrics averages it."""
    name, _, k = metric.partition("@")
    return {qid: round(v, 6) for qid, v in query_scores(qrels, run, [name], [int(k)])[metric].items()}


def ir_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics: list[str],
               ks: list[int]) -> dict[str, float]:
    """Mean metrics over the queries with at least one relevant judgement; an unanswered query scores 0."""
    return mean_scores(query_scores(qrels, run, metrics, ks))
