"""results.html beside `eval retrieval`'s results.md: the primary metric's bars with the significance marks, the
table, and for each pipeline the queries that gained and lost most against the first row."""

from __future__ import annotations

from pathlib import Path

from ragtune.html_page import esc, figure, page, pyplot, section, table
from ragtune.utils import write_atomic

CHANGED = 8  # queries shown per side (wins, losses) for each pipeline


def significance_mark(result, metric: str) -> str:
    """↑/↓ where `result` is significantly better/worse than the first row on `metric`, else nothing."""
    test = getattr(result, "significance", None)
    if not test:
        return ""
    return "↑" if test["better"].get(metric) else "↓" if test["worse"].get(metric) else ""


def bars_figure(results: list, metric: str, title: str | None = None):
    """One bar per pipeline for `metric`, the first grey, a significant win green and a loss red (results.png and
    results.html show it)."""
    plt = pyplot()
    values = [r.metrics.get(metric, 0.0) for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 1.7 * len(results)), 4.2))
    tone = {"↑": "#137333", "↓": "#b3261e", "": "#1a73e8"}
    colors = ["#9aa0a6"] + [tone[significance_mark(r, metric)] for r in results[1:]]
    bars = ax.bar(range(len(values)), values, color=colors)
    ax.bar_label(bars, labels=[f"{v:.3f}{significance_mark(r, metric)}" for v, r in zip(values, results)], padding=2)
    ax.set_xticks(range(len(values)), [r.name if len(r.name) <= 40 else r.name[:37] + "..." for r in results],
                  rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=metric, ylim=(0, min(1.0, max(values + [0.01]) * 1.15)), title=title or "")
    fig.tight_layout()
    return fig


def _bars(results: list, primary: str) -> str:
    return figure(bars_figure(results, primary), f"{primary} per pipeline; ↑/↓ (green/red): significantly "
                  "better/worse than the first (grey) row in a paired test.")


def _changes(results: list, queries: dict[str, str], scored: str) -> str:
    base = results[0].per_query or {}
    parts = []
    for result in results[1:]:
        mine = result.per_query or {}
        moved = sorted(((mine[q] - base[q], q) for q in mine if q in base), reverse=True)
        wins = [(d, q) for d, q in moved if d > 0][:CHANGED]
        losses = [(d, q) for d, q in reversed(moved) if d < 0][:CHANGED]
        won, lost = sum(d > 0 for d, _ in moved), sum(d < 0 for d, _ in moved)
        rows = [[("won" if d > 0 else "lost"), esc(queries.get(q, q)[:200]), f"{base[q]:.3f}", f"{mine[q]:.3f}",
                 f"{d:+.3f}"] for d, q in wins + losses]
        parts.append(f"<h3>{esc(result.name)}</h3><p>{won} queries gained and {lost} lost {esc(scored)} against "
                     f"<code>{esc(results[0].name)}</code>; the largest changes:</p>"
                     + table(["", "query", results[0].name[:30], result.name[:30], "change"], rows, numeric_from=2))
    return "".join(parts)


def write_results_html(path: Path, results: list, dataset: str, headline: list[str], primary: str,
                       queries: dict[str, str] | None = None, subtitle: str | None = None,
                       per_query_name: str | None = None) -> Path:
    """The page: bars of `primary` with significance marks, the `headline` table, and each row's largest per-query
    changes against the first (`per_query_name`: what each result's `per_query` scores; `primary` by default)."""
    rows = [[f"<code>{esc(r.name)}</code>"]
            + [f"{r.metrics.get(m, float('nan')):.4f}{significance_mark(r, m)}" for m in headline] for r in results]
    subtitle = subtitle or f"{results[0].queries} queries, {results[0].documents} documents"
    sections = [f"<h1>{esc(dataset)}</h1>", f"<p class=\"muted\">{esc(subtitle)}</p>",
                section("Pipelines", _bars(results, primary) + table(["pipeline", *headline], rows), "pipelines")]
    if len(results) > 1 and all(getattr(r, "per_query", None) is not None for r in results):
        sections.append(section(f"Per query, against {results[0].name}",
                                _changes(results, queries or {}, per_query_name or primary), "per-query"))
    write_atomic(path, page(f"ragtune: {dataset}", sections))
    return path
