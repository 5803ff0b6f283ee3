"""Reranker training data: judged (query, documents, labels) groups, laid out the way each loss reads them.

Pairs and triplets give label 1 to the positive and 0 to each negative; labelled pairs (query/document/label or
sentence1/sentence2/score) keep their label, a 0/1 or a graded score in [0, 1].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ragtune.data.formats import Examples
from ragtune.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Group:
    query: str
    docs: list[str] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)

    def add(self, doc: str, label: float) -> None:
        if doc in self.docs:  # the best label wins when a document is judged twice
            i = self.docs.index(doc)
            self.labels[i] = max(self.labels[i], label)
        else:
            self.docs.append(doc)
            self.labels.append(label)

    @property
    def positives(self) -> list[str]:
        return [d for d, label in zip(self.docs, self.labels) if label > 0 and label == max(self.labels)]

    @property
    def negatives(self) -> list[str]:
        return [d for d, label in zip(self.docs, self.labels) if label == 0]


def groups_from_examples(examples: Examples) -> list[Group]:
    """One group per query, in first-seen order."""
    groups: dict[str, Group] = {}
    for row in examples.rows:
        if examples.format == "scored_pairs":
            groups.setdefault(row["sentence1"], Group(row["sentence1"])).add(row["sentence2"], row["score"])
            continue
        group = groups.setdefault(row["anchor"], Group(row["anchor"]))
        group.add(row["positive"], 1.0)
        for key, value in row.items():
            if key.startswith("negative"):
                group.add(value, 0.0)
    return list(groups.values())


def _tuples(groups: list[Group]) -> list[dict]:
    usable = [g for g in groups if g.positives and g.negatives]
    if not usable:
        raise ConfigError("this loss needs (query, positive, negative) tuples but no query has both a positive and "
                          "a negative; mine negatives (data.hard_negatives) or use loss=bce")
    middle = sum(1 for g in usable for label in g.labels if 0 < label < max(g.labels))
    if middle:
        log.info("%d documents graded between 0 and their query's top grade are left out: tuples take the top-graded "
                 "documents as positives and the grade-0 ones as negatives (bce, listnet and lambdaloss use every "
                 "grade)", middle)
    width = min(len(g.negatives) for g in usable)
    return [{"query": g.query, "positive": p, **{f"negative_{i + 1}": n for i, n in enumerate(g.negatives[:width])}}
            for g in usable for p in g.positives]


def rerank_rows(groups: list[Group], layout: str) -> list[dict]:
    """Rows for a loss layout: pointwise (query, document, label), tuples, or listwise (query, docs, labels)."""
    if layout == "pointwise":
        labels = {label for g in groups for label in g.labels}
        if labels and min(labels) > 0:
            raise ConfigError("every training pair is a positive, so the reranker would learn nothing; mine "
                              "negatives (data.hard_negatives: {first_stage: bm25}) or give labelled negatives")
        return [{"query": g.query, "document": d, "label": float(label)}
                for g in groups for d, label in zip(g.docs, g.labels)]
    if layout == "listwise":
        lists = [{"query": g.query, "docs": g.docs, "labels": [float(x) for x in g.labels]}
                 for g in groups if len(g.docs) > 1]
        if not lists:
            raise ConfigError("listwise losses need several judged documents per query; mine negatives "
                              "(data.hard_negatives) or use loss=bce")
        return lists
    return _tuples(groups)


def _teacher_labels(rows: list[dict], teacher, label) -> list[dict]:
    out = []
    for row in rows:
        negatives = [v for k, v in row.items() if k.startswith("negative_")]
        scores = teacher.score(row["query"], [row["positive"], *negatives])
        out.append({**row, "label": label([float(s) for s in scores])})
    return out


def add_teacher_margins(rows: list[dict], teacher) -> list[dict]:
    """MarginMSE labels: the teacher's score of the positive minus its score of each negative."""
    return _teacher_labels(rows, teacher, lambda scores: [scores[0] - s for s in scores[1:]])


def add_teacher_scores(rows: list[dict], teacher) -> list[dict]:
    """Distillation labels: the teacher's score of the positive and of each negative, in column order."""
    return _teacher_labels(rows, teacher, lambda scores: scores)
