"""IR metrics against hand-computed values, ties and empty cases."""

from __future__ import annotations

import math

import pytest

from ragtune.eval.metrics import ir_metrics

ALL = ["ndcg", "mrr", "map", "recall", "precision", "accuracy"]


def test_hand_computed_single_query():
    qrels = {"q": {"a": 1, "c": 1}}
    run = {"q": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1}}
    m = ir_metrics(qrels, run, ALL, [1, 3])
    assert m["precision@1"] == 1.0 and m["precision@3"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["recall@1"] == 0.5 and m["recall@3"] == 1.0
    assert m["mrr@1"] == 1.0 and m["accuracy@1"] == 1.0
    assert m["map@3"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-6)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx(dcg / idcg, abs=1e-6)


def test_graded_relevance_uses_linear_gain():
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": {"a": 2.0, "b": 1.0}}
    m = ir_metrics(qrels, run, ["ndcg"], [2])
    assert m["ndcg@2"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)), abs=1e-6)


def test_first_hit_below_cutoff_and_mean_over_queries():
    qrels = {"q1": {"x": 1}, "q2": {"y": 1}}
    run = {"q1": {"a": 3, "b": 2, "x": 1}, "q2": {"y": 5}}
    m = ir_metrics(qrels, run, ["mrr", "accuracy"], [2, 3])
    assert m["mrr@2"] == pytest.approx(0.5) and m["mrr@3"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["accuracy@2"] == 0.5 and m["accuracy@3"] == 1.0


def test_ties_break_by_document_id():
    qrels = {"q": {"b": 1}}
    run = {"q": {"b": 0.5, "a": 0.5}}
    assert ir_metrics(qrels, run, ["mrr"], [1])["mrr@1"] == 0.0  # "a" sorts first among equals


def test_empty_cases():
    assert ir_metrics({}, {}, ["ndcg"], [10]) == {"ndcg@10": 0.0}
    # an unanswered query counts as 0; a query without relevant documents is not counted
    m = ir_metrics({"q1": {"a": 1}, "q2": {"b": 0}, "q3": {"c": 1}}, {"q1": {"a": 1.0}}, ["recall"], [5])
    assert m["recall@5"] == 0.5


@pytest.mark.slow
def test_matches_ranx():
    """The same numbers as ranx on a random run (ranx compiles numba kernels: minutes on a fresh machine)."""
    import random

    from ranx import Qrels, Run, evaluate

    rng = random.Random(0)
    docs = [f"d{i}" for i in range(60)]
    qrels = {f"q{i}": {d: rng.choice([1, 2]) for d in rng.sample(docs, rng.randint(1, 6))} for i in range(40)}
    run = {q: {d: rng.random() for d in rng.sample(docs, 30)} for q in qrels}
    ours = ir_metrics(qrels, run, ALL, [1, 5, 10, 30])
    names = {"accuracy": "hit_rate"}
    theirs = evaluate(Qrels(qrels), Run(run), [f"{names.get(n.split('@')[0], n.split('@')[0])}@{n.split('@')[1]}"
                                               for n in ours])
    for (name, value), ranx_value in zip(ours.items(), theirs.values()):
        assert value == pytest.approx(ranx_value, abs=1e-5), name
