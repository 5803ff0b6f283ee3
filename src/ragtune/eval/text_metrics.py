"""Text metrics between generated and reference answers: ROUGE-L (rouge-score), BLEU and chrF (sacrebleu),
SQuAD-style exact match and token F1, label accuracy, and embedding cosine similarity."""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (the SQuAD normalisation)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalise_answer(prediction) == normalise_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalise_answer(prediction).split(), normalise_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def predicted_label(text: str, labels: list[str]) -> str | None:
    """The label that appears first (as a word) in `text`, case-insensitively; None when none does."""
    found = []
    for label in labels:
        match = re.search(rf"\b{re.escape(label.lower())}\b", text.lower())
        if match:
            found.append((match.start(), label))
    return min(found)[1] if found else None


def rouge_l_scores(predictions: list[str], references: list[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]


def rouge_l(predictions: list[str], references: list[str]) -> float:
    return float(np.mean(rouge_l_scores(predictions, references)))


def embedding_similarities(predictions: list[str], references: list[str], embedder: str) -> list[float]:
    from ragtune.models.device import choose_placement
    from ragtune.models.load import load_embedder
    from ragtune.retrieval.dense import encode

    placement = choose_placement()
    model = load_embedder(embedder, placement)
    a, b = encode(model, predictions, placement), encode(model, references, placement)
    return [float(v) for v in np.sum(a * b, axis=1)]


def example_scores(predictions: list[str], references: list[str], metrics: list[str], labels: list[str] | None = None,
                   embedder: str | None = None) -> dict[str, list[float]]:
    """One score per prediction for each requested per-example metric (bleu and chrf are corpus-level: not here)."""
    out: dict[str, list[float]] = {}
    for metric in metrics:
        if metric == "rouge_l":
            out[metric] = rouge_l_scores(predictions, references)
        elif metric == "exact_match":
            out[metric] = [exact_match(p, r) for p, r in zip(predictions, references)]
        elif metric == "f1":
            out[metric] = [token_f1(p, r) for p, r in zip(predictions, references)]
        elif metric == "accuracy":
            out[metric] = [float(predicted_label(p, labels or []) == predicted_label(r, labels or []) is not None)
                           for p, r in zip(predictions, references)]
        elif metric == "embedding_similarity":
            out[metric] = embedding_similarities(predictions, references, embedder or "")
    return out


def score_texts(predictions: list[str], references: list[str], metrics: list[str], labels: list[str] | None = None,
                embedder: str | None = None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Every requested text metric (perplexity is not one: it needs the model) as a mean over the examples (bleu
    and chrf over the corpus), and the per-example scores behind the means."""
    import sacrebleu

    if not predictions:
        return {}, {}
    per_example = example_scores(predictions, references, metrics, labels, embedder)
    out: dict[str, float] = {}
    for metric in metrics:
        if metric in per_example:
            out[metric] = float(np.mean(per_example[metric]))
        elif metric == "bleu":
            out[metric] = float(sacrebleu.corpus_bleu(predictions, [references]).score)
        elif metric == "chrf":
            out[metric] = float(sacrebleu.corpus_chrf(predictions, [references]).score)
    return {k: round(v, 6) for k, v in out.items()}, per_example


def text_metrics(predictions: list[str], references: list[str], metrics: list[str], labels: list[str] | None = None,
                 embedder: str | None = None) -> dict[str, float]:
    """Every requested text metric, as means over the examples (bleu and chrf over the corpus)."""
    return score_texts(predictions, references, metrics, labels, embedder)[0]
