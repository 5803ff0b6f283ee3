"""The before/after table's paired test: p-values that match scipy's, None where no test can run, and the table,
verdict and report that show them."""

from __future__ import annotations

import pytest

from ragtune.eval.report import ScoreBook, paired_comparison, paired_p_values, summary_markdown


def _scores(values: list[float]) -> dict[str, float]:
    return {f"q{i}": v for i, v in enumerate(values)}


def test_p_values_are_scipys_paired_t_test_over_the_shared_examples():
    from scipy.stats import ttest_rel

    before = {"ndcg@10": _scores([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])}
    after = {"ndcg@10": {**_scores([0.3, 0.6, 0.6, 0.9, 0.5, 0.6]), "only-after": 1.0}}
    p = paired_p_values(before, after)["ndcg@10"]
    assert p == pytest.approx(ttest_rel([0.3, 0.6, 0.6, 0.9, 0.5, 0.6], [0.1, 0.5, 0.3, 0.9, 0.2, 0.4]).pvalue)
    assert p < 0.05


def test_no_p_value_where_every_example_moved_alike_or_none_was_kept():
    same = {"mrr@10": _scores([0.2, 0.4, 0.6])}
    assert paired_p_values(same, same) == {"mrr@10": None}
    assert paired_p_values(None, same) == {} and paired_p_values(same, None) == {}
    comparison = paired_comparison("mrr@10", {"mrr@10": 0.4}, {"mrr@10": 0.4}, False, None, same)
    assert not comparison.tested and "| p |" not in summary_markdown(comparison, "t", {})


def test_the_table_and_the_verdict_say_whether_the_gain_is_significant():
    base = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.2, 0.3]
    tuned = {"ndcg@10": _scores([v + 0.1 + 0.01 * (i % 3) for i, v in enumerate(base)]),
             "recall@10": _scores([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0])}
    before = {"ndcg@10": _scores(base), "recall@10": _scores([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])}
    means = {name: {m: sum(v.values()) / len(v) for m, v in d.items()} for name, d in (("b", before), ("a", tuned))}
    comparison = paired_comparison("ndcg@10", means["b"], means["a"], False, before, tuned)
    assert comparison.examples == 8 and comparison.significance("ndcg@10") == "<0.001 *"
    assert not comparison.significance("recall@10").endswith("*")
    assert "improved: ndcg@10 rose" in comparison.verdict and "; significant: p = " in comparison.verdict
    table = summary_markdown(comparison, "t", {})
    assert "| metric | before | after | delta | p |" in table and "| **ndcg@10** |" in table
    assert "paired t-test over the 8 eval examples" in table


def test_a_score_book_keeps_each_step():
    book = ScoreBook()
    book.keep(2, {"f1": {"0": 1.0}})
    book.keep(4, {})  # an evaluation with no per-example metric keeps nothing
    assert book.by_step == {2: {"f1": {"0": 1.0}}}



def test_a_corpus_level_primary_metric_counts_the_answers_behind_the_other_metrics():
    before = {"f1": _scores([0.1, 0.2, 0.3]), "rouge_l": _scores([0.2, 0.2, 0.1])}
    after = {"f1": _scores([0.4, 0.3, 0.9]), "rouge_l": _scores([0.3, 0.1, 0.5])}
    comparison = paired_comparison("perplexity", {"perplexity": 9.0, "f1": 0.2}, {"perplexity": 7.0, "f1": 0.53},
                                   False, before, after)
    assert comparison.examples == 3 and comparison.significance("perplexity") == "–"
    assert "over the 3 eval examples" in comparison.test_note
