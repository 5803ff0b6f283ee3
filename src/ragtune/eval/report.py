"""Before/after reports: the side-by-side table, summary.md, and the regression verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LOWER_IS_BETTER = ("perplexity", "loss")
MAX_P = 0.05  # a before/after difference counts as significant below this p-value

PerExample = dict[str, dict[str, float]]  # {metric: {example id: score}}, for the metrics scored per example


def greater_is_better(metric: str) -> bool:
    """IR and text-overlap metrics rise as a model improves; perplexity and losses fall."""
    return not metric.startswith(LOWER_IS_BETTER)


@dataclass
class ScoreBook:
    """Each evaluation's per-example scores, kept by the recipe while the Trainer logs only the means: the base
    model's, each step's, and the tuned model's, for the paired test of the before/after table."""

    before: PerExample | None = None
    after: PerExample | None = None
    by_step: dict[int | None, PerExample] = field(default_factory=dict)

    def keep(self, step: int | None, scores: PerExample | None) -> None:
        if scores:
            self.by_step[step] = scores


def paired_p_values(before: PerExample | None, after: PerExample | None) -> dict[str, float | None]:
    """A two-sided paired t-test per metric over the examples scored both times (as `eval retrieval`'s student
    test); None where every difference is the same (no p-value exists, e.g. nothing changed)."""
    from scipy.stats import ttest_rel

    out: dict[str, float | None] = {}
    for metric, tuned in (after or {}).items():
        base = (before or {}).get(metric) or {}
        ids = [i for i in tuned if i in base]
        if len(ids) < 2:
            continue
        a, b = np.array([base[i] for i in ids]), np.array([tuned[i] for i in ids])
        differences = b - a
        p = None if np.allclose(differences, differences[0]) else float(ttest_rel(b, a).pvalue)
        out[metric] = None if p is None or np.isnan(p) else p  # NaN is not JSON, and says no more than None
    return out


def shared_examples(before: PerExample | None, after: PerExample | None, metric: str) -> int:
    """How many examples the paired test compares: those of `metric` scored both times, else of the metric with
    the most (a generator's primary metric, perplexity, is corpus-level)."""
    before, after = before or {}, after or {}
    counts = {m: len(set(after[m]) & set(before[m])) for m in after if m in before}
    return counts.get(metric) or max(counts.values(), default=0)


def rounded(scores: PerExample | None) -> PerExample | None:
    """Per-example scores to 6 places, as the means are written."""
    return {m: {i: round(v, 6) for i, v in values.items()} for m, values in scores.items()} if scores else scores


def paired_comparison(primary: str, before: dict, after: dict, kept_base: bool = False,
                      before_scores: PerExample | None = None, after_scores: PerExample | None = None) -> Comparison:
    """The before/after comparison with each metric's paired test, where both evaluations kept per-example
    scores (a run resumed past its best step has none for the tuned model, and its table no p column)."""
    p_values = paired_p_values(before_scores, after_scores)
    return Comparison(primary, before, after, kept_base, p_values or None,
                      shared_examples(before_scores, after_scores, primary))


@dataclass
class Comparison:
    primary_metric: str
    before: dict[str, float]
    after: dict[str, float]  # the best tuned checkpoint's
    kept_base: bool = False  # no checkpoint beat the base model, so final/ is the base model
    p_values: dict[str, float | None] | None = None  # a paired test per metric over the eval examples
    examples: int = 0  # how many eval examples the paired test compared

    def p_value(self, metric: str) -> float | None:
        return (self.p_values or {}).get(metric)

    def significance(self, metric: str) -> str:
        """The p-value as the tables print it, '*' below MAX_P; '–' where no test ran or none could."""
        p = self.p_value(metric)
        if p is None:
            return "–"
        shown = "<0.001" if p < 0.001 else f"{p:.3f}"
        return f"{shown} *" if p < MAX_P else shown

    @property
    def tested(self) -> bool:
        return bool(self.p_values)

    @property
    def test_note(self) -> str:
        return (f"p: two-sided paired t-test over the {self.examples} eval examples scored before and after; "
                f"* marks p < {MAX_P}")

    @property
    def delta(self) -> float:
        return self.after[self.primary_metric] - self.before[self.primary_metric]

    @property
    def improvement(self) -> float:
        """The change in the primary metric, positive when the tuned model is better."""
        return self.delta if greater_is_better(self.primary_metric) else -self.delta

    @property
    def regressed(self) -> bool:
        """The tuned model is worse than its base on the primary metric."""
        return self.improvement < 0

    def rows(self) -> list[tuple[str, float, float, float]]:
        return [(m, self.before[m], self.after[m], self.after[m] - self.before[m]) for m in self.after
                if m in self.before]

    @property
    def failed(self) -> bool:
        """The run did not produce a better model: it regressed, or the base model was kept."""
        return self.regressed or self.kept_base

    @property
    def verdict(self) -> str:
        p, d = self.primary_metric, self.delta
        moved = f"{'rose' if d > 0 else 'fell'} by {abs(d):.4f} ({self.before[p]:.4f} -> {self.after[p]:.4f})"
        label = "REGRESSION" if self.regressed else "NO GAIN" if self.kept_base else "improved"
        verdict = f"{label}: {p} {moved}"
        if p in (self.p_values or {}):
            value = self.p_value(p)
            verdict += ("; no p-value (every eval example moved alike)" if value is None else
                        f"; {'significant' if value < MAX_P else 'not significant'}: p = {value:.3g} in a paired "
                        f"t-test over {self.examples} examples")
        if self.kept_base:
            verdict += ("; no checkpoint beat the base model, so final/ is the base model (the best checkpoint stays "
                        "in checkpoints/): check the data, or try another learning rate")
        return verdict


def summary_markdown(comparison: Comparison, title: str, details: dict[str, str]) -> str:
    """summary.md: what ran, the before/after table with deltas, and the verdict."""
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in details.items()]
    tested = comparison.tested
    lines += ["", "| metric | before | after | delta |" + (" p |" if tested else ""),
              "|---|---:|---:|---:|" + ("---:|" if tested else "")]
    for metric, before, after, delta in comparison.rows():
        mark = "**" if metric == comparison.primary_metric else ""
        p = f" {comparison.significance(metric)} |" if tested else ""
        lines.append(f"| {mark}{metric}{mark} | {before:.4f} | {after:.4f} | {delta:+.4f} |{p}")
    lines += ["", *([comparison.test_note, ""] if tested else []), f"**Verdict:** {comparison.verdict}", ""]
    return "\n".join(lines)
