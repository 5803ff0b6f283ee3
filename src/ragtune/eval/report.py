"""Before/after reports: the side-by-side table, summary.md, and the regression verdict."""

from __future__ import annotations

from dataclasses import dataclass

LOWER_IS_BETTER = ("perplexity", "loss")


def greater_is_better(metric: str) -> bool:
    """IR and text-overlap metrics rise as a model improves; perplexity and losses fall."""
    return not metric.startswith(LOWER_IS_BETTER)


@dataclass
class Comparison:
    primary_metric: str
    before: dict[str, float]
    after: dict[str, float]  # the best tuned checkpoint's
    kept_base: bool = False  # no checkpoint beat the base model, so final/ is the base model
    p_values: dict[str, float | None] | None = None  # a paired test per metric over the eval examples

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
        if self.kept_base:
            verdict += ("; no checkpoint beat the base model, so final/ is the base model (the best checkpoint stays "
                        "in checkpoints/): check the data, or try another learning rate")
        return verdict


def summary_markdown(comparison: Comparison, title: str, details: dict[str, str]) -> str:
    """summary.md: what ran, the before/after table with deltas, and the verdict."""
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in details.items()]
    lines += ["", "| metric | before | after | delta |", "|---|---:|---:|---:|"]
    for metric, before, after, delta in comparison.rows():
        mark = "**" if metric == comparison.primary_metric else ""
        lines.append(f"| {mark}{metric}{mark} | {before:.4f} | {after:.4f} | {delta:+.4f} |")
    lines += ["", f"**Verdict:** {comparison.verdict}", ""]
    return "\n".join(lines)
