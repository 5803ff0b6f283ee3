"""Label metrics for answers over a fixed label set (PubMedQA's yes/no/maybe): accuracy, macro-F1, per-class
recall, and paired tests between two systems answering the same questions.

Macro-F1 and per-class recall keep a model that always says the majority label from looking good: on PubMedQA
"yes" is 55% of the test labels, so always-yes scores 0.55 accuracy but about 0.24 macro-F1.
"""

from __future__ import annotations

import numpy as np

MISSING = ""  # the prediction of an answer that names no label: wrong for every gold label


def label_report(gold: list[str], predicted: list[str], labels: list[str]) -> dict[str, float]:
    """accuracy, macro_f1 (over `labels`, an absent class counting F1 0) and recall_<label> for each label."""
    gold_a, pred_a = np.array(gold, dtype=object), np.array(predicted, dtype=object)
    out = {"accuracy": float(np.mean(gold_a == pred_a)) if len(gold) else 0.0}
    f1s = []
    for label in labels:
        tp = float(np.sum((pred_a == label) & (gold_a == label)))
        predicted_n, gold_n = float(np.sum(pred_a == label)), float(np.sum(gold_a == label))
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / gold_n if gold_n else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        out[f"recall_{label}"] = recall
    out["macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    return out


def macro_f1(gold, predicted, labels) -> float:
    return label_report(list(gold), list(predicted), labels)["macro_f1"]


def paired_bootstrap(gold: list[str], a: list[str], b: list[str], labels: list[str], samples: int = 10000,
                     seed: int = 0) -> dict[str, float]:
    """Macro-F1 of b minus a, and the one-sided bootstrap p-value that b is not better: the share of question
    resamples (the same resample for both systems) in which b's macro-F1 does not exceed a's."""
    rng = np.random.default_rng(seed)
    gold_a, a_a, b_a = (np.array(x, dtype=object) for x in (gold, a, b))
    n = len(gold_a)
    not_better = 0
    for _ in range(samples):
        pick = rng.integers(0, n, n)
        not_better += macro_f1(gold_a[pick], b_a[pick], labels) <= macro_f1(gold_a[pick], a_a[pick], labels)
    return {"delta_macro_f1": macro_f1(gold, b, labels) - macro_f1(gold, a, labels),
            "p_bootstrap": (not_better + 1) / (samples + 1), "samples": samples}


def mcnemar(gold: list[str], a: list[str], b: list[str]) -> dict[str, float]:
    """Exact McNemar test on accuracy: questions only b gets right against questions only a gets right."""
    from scipy.stats import binomtest

    right_a = np.array(a, dtype=object) == np.array(gold, dtype=object)
    right_b = np.array(b, dtype=object) == np.array(gold, dtype=object)
    only_b, only_a = int(np.sum(right_b & ~right_a)), int(np.sum(right_a & ~right_b))
    p = binomtest(only_b, only_a + only_b, 0.5, alternative="two-sided").pvalue if only_a + only_b else 1.0
    return {"only_b_right": only_b, "only_a_right": only_a, "p_mcnemar": float(p)}


def fit_label_offsets(gold: list[str], scores: list[dict[str, float]], labels: list[str],
                      span: float = 4.0, step: float = 0.1) -> dict[str, float]:
    """Per-label offsets added to the label log-likelihoods that maximise macro-F1 on (held-apart) questions.

    A small model's likelihoods carry a prior for the label it saw most ("yes"), which swamps what the context says;
    shifting each label's score by a constant, fitted on other questions than those measured (the training split),
    corrects that prior without touching the test set. The first label stays at 0; the others are searched on a
    grid. Ties go to the smallest shift."""
    import itertools

    matrix = np.array([[s[label] for label in labels] for s in scores])
    grid = np.round(np.arange(-span, span + step / 2, step), 6)
    best, best_key = {label: 0.0 for label in labels}, None
    for shift in itertools.product(grid, repeat=len(labels) - 1):
        offsets = np.array((0.0, *shift))
        predicted = [labels[i] for i in np.argmax(matrix + offsets, axis=1)]
        key = (macro_f1(gold, predicted, labels), -float(np.abs(offsets).sum()))
        if best_key is None or key > best_key:
            best, best_key = dict(zip(labels, offsets.tolist())), key
    return best


def predict_with_offsets(scores: dict[str, dict[str, float]], offsets: dict[str, float]) -> dict[str, str]:
    return {q: max(s, key=lambda label: s[label] + offsets.get(label, 0.0)) for q, s in scores.items()}
