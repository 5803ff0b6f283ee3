"""Write a side-by-side evaluation: results.json (the shape scripts rely on), results.md and a bar chart."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ragtune.eval.results_html import bars_figure, significance_mark, write_results_html
from ragtune.utils import write_atomic


def results_markdown(results: list, metric_names: list[str]) -> str:
    """One row per pipeline; ↑/↓ marks a significant win/loss against the first row (paired test)."""
    header = "| pipeline | " + " | ".join(metric_names) + " | index s | first p50/p95 ms | rerank p50/p95 ms |"
    lines = [header, "|---|" + "---:|" * (len(metric_names) + 3)]
    for r in results:
        cells = [f"{r.metrics.get(m, float('nan')):.4f}{significance_mark(r, m)}" for m in metric_names]
        t = r.timings
        lines.append(f"| `{r.name}` | " + " | ".join(cells) + f" | {t.get('index_build_s', 0):.1f} | "
                     f"{t.get('first_stage_p50_ms', 0):.1f} / {t.get('first_stage_p95_ms', 0):.1f} | "
                     f"{t.get('rerank_p50_ms', 0):.1f} / {t.get('rerank_p95_ms', 0):.1f} |")
    if len(results) > 1 and results[1].significance:
        test = results[1].significance
        lines += ["", f"↑/↓: significantly better/worse than `{results[0].name}` ({test['test']} paired test, "
                      f"p < {test['max_p']})."]
    return "\n".join(lines) + "\n"


def bar_chart(results: list, metric: str, path: Path, title: str) -> Path:
    """results.png: the bars results.html shows, as a file."""
    from ragtune.html_page import pyplot

    fig = bars_figure(results, metric, title)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    pyplot().close(fig)
    tmp.replace(path)
    return path


def write_results(out_dir: str | Path, results: list, dataset: str, headline: list[str],
                  primary: str = "ndcg@10", queries: dict[str, str] | None = None) -> Path:
    """Write results.json, results.md, results.png and results.html (with the per-query changes, `queries` giving
    their texts) into `out_dir`; return the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"dataset": dataset, "pipelines": [asdict(r) for r in results]}
    write_atomic(out / "results.json", json.dumps(payload, indent=2))
    write_atomic(out / "results.md", f"# {dataset}\n\n" + results_markdown(results, headline))
    bar_chart(results, primary, out / "results.png", f"{dataset}: {primary}")
    write_results_html(out / "results.html", results, dataset, headline, primary, queries)
    return out / "results.json"
