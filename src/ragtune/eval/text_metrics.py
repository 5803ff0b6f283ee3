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


def rouge_l(predictions: list[str], references: list[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]))


def embedding_similarity(predictions: list[str], references: list[str], embedder: str) -> float:
    from ragtune.models.device import choose_placement
    from ragtune.models.load import load_embedder
    from ragtune.retrieval.dense import encode

    placement = choose_placement()
    model = load_embedder(embedder, placement)
    a, b = encode(model, predictions, placement), encode(model, references, placement)
    return float(np.mean(np.sum(a * b, axis=1)))


def text_metrics(predictions: list[str], references: list[str], metrics: list[str], labels: list[str] | None = None,
                 embedder: str | None = None) -> dict[str, float]:
    """Every requested text metric (perplexity is not one: it needs the model), as means over the examples."""
    import sacrebleu

    out: dict[str, float] = {}
    if not predictions:
        return out
    for metric in metrics:
        if metric == "rouge_l":
            out[metric] = rouge_l(predictions, references)
        elif metric == "bleu":
            out[metric] = float(sacrebleu.corpus_bleu(predictions, [references]).score)
        elif metric == "chrf":
            out[metric] = float(sacrebleu.corpus_chrf(predictions, [references]).score)
        elif metric == "exact_match":
            out[metric] = float(np.mean([exact_match(p, r) for p, r in zip(predictions, references)]))
        elif metric == "f1":
            out[metric] = float(np.mean([token_f1(p, r) for p, r in zip(predictions, references)]))
        elif metric == "accuracy":
            hits = [predicted_label(p, labels or []) == predicted_label(r, labels or []) is not None
                    for p, r in zip(predictions, references)]
            out[metric] = float(np.mean(hits))
        elif metric == "embedding_similarity":
            out[metric] = embedding_similarity(predictions, references, embedder or "")
    return {k: round(v, 6) for k, v in out.items()}
