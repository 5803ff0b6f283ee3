"""RUN/report.html: what a run did, in one self-contained page.

Every task: the verdict and the before/after table, the loss and eval-metric curves from metrics.jsonl with the
best checkpoint marked, what ran (data, device, time) and the resolved config. Embedders add a 2-D t-SNE map of a
sample of eval queries and their gold documents before and after (a line joins each query to its document, so one
sees them come together) and the positive against hard-negative similarities; rerankers add the scores of
positives against negatives; generators and seq2seq models add the fixed eval prompts answered at each evaluation.
`ragtune report RUN` rebuilds it; `ragtune report RUN_A RUN_B` compares two runs.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from ragtune.errors import OutputError
from ragtune.eval.report import paired_comparison
from ragtune.html_page import esc, figure, page, pyplot, section, table
from ragtune.run_dir import RunDir
from ragtune.utils import write_atomic

log = logging.getLogger(__name__)

SAMPLE_QUERIES = 32  # eval queries drawn for the embedding map and the score distributions


def _damaged(path: Path, exc: Exception) -> OutputError:
    return OutputError(f"{path}: not readable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); the run "
                       "directory is damaged: train it again, or restore the file")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, exc) from None


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, exc) from None
    if not isinstance(data, dict):
        raise _damaged(path, TypeError("not a JSON object"))
    return data


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows, number = [], 0
    try:
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
            if line.strip():
                row = json.loads(line)
                rows.append(row if isinstance(row, dict) else {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(Path(f"{path}:{number}") if number else path, exc) from None
    return rows


def _details(run: RunDir) -> list[tuple[str, str]]:
    """The `- **key**: value` lines of summary.md."""
    if not run.summary.is_file():
        return []
    out = []
    for line in _text(run.summary).splitlines():
        if line.startswith("- **") and "**: " in line:
            key, _, value = line[4:].partition("**: ")
            out.append((key, value))
    return out


class RunFacts:
    """What a finished run directory says of itself."""

    def __init__(self, path: str | Path):
        self.run = RunDir(path)
        if not self.run.config.is_file() or not self.run.eval_after.is_file():
            raise OutputError(f"{path}: not a finished ragtune run (no config.yaml and eval_after.json); give a run "
                              "directory that `ragtune train` completed")
        from ragtune.config.load import recorded_task

        self.task = recorded_task(self.run.config) or "embed"
        self.before, self.after = _json(self.run.eval_before), _json(self.run.eval_after)
        if not isinstance(self.after.get("metrics"), dict) or not self.after["metrics"]:
            raise _damaged(self.run.eval_after, KeyError("no 'metrics'"))
        self.logged = _rows(self.run.metrics)
        self.primary = (_json(self.run.progress).get("best") or {}).get("metric") or next(iter(self.after["metrics"]))
        for path, data in ((self.run.eval_before, self.before), (self.run.eval_after, self.after)):
            if self.primary not in (data.get("metrics") or {}):
                raise _damaged(path, KeyError(f"no '{self.primary}' in its metrics"))
        self.comparison = paired_comparison(self.primary, self.before.get("metrics", {}), self.after["metrics"],
                                            bool(self.after.get("kept_base")), self.before.get("per_example"),
                                            self.after.get("per_example"))
        self.best_step = self.after.get("best_step")
        self.name = self.run.path.resolve().name


def _verdict(facts: RunFacts) -> str:
    css = "good" if facts.comparison.improvement > 0 else "bad"
    return f'<p class="verdict {css}">{esc(facts.comparison.verdict)}</p>'


def _before_after(facts: RunFacts) -> str:
    rows, classes, tested = [], [], facts.comparison.tested
    for metric, before, after, delta in facts.comparison.rows():
        arrow = "up" if delta > 0 else "down" if delta < 0 else ""
        rows.append([esc(metric), f"{before:.4f}", f"{after:.4f}", f'<span class="{arrow}">{delta:+.4f}</span>',
                     *([esc(facts.comparison.significance(metric))] if tested else [])])
        classes.append("primary" if metric == facts.primary else "")
    split = facts.after.get("split", "")
    note = f'<p class="muted">{esc(facts.comparison.test_note)}</p>' if tested else ""
    return (f"<p class=\"muted\">on {esc(split)}; best checkpoint: step {esc(facts.best_step)}</p>"
            + table(["metric", "before", "after", "delta", *(["p"] if tested else [])], rows, classes=classes) + note)


def _curves(runs: list[RunFacts]) -> str:
    plt = pyplot()
    fig, (loss_ax, eval_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    any_eval = False
    for facts in runs:
        losses = [(r["step"], r["loss"]) for r in facts.logged if "loss" in r and "step" in r]
        if losses:
            loss_ax.plot(*zip(*losses), label=facts.name)
        key = f"eval_{facts.primary}"
        evals = [(r["step"], r[key]) for r in facts.logged if key in r]
        if evals:
            any_eval = True
            eval_ax.plot(*zip(*evals), marker="o", label=facts.name)
            best = [(s, v) for s, v in evals if s == facts.best_step]
            if best:
                eval_ax.scatter(*zip(*best), s=160, facecolors="none", edgecolors="#d93025", linewidths=2,
                                label=f"best ({facts.name}, step {facts.best_step})")
        base = facts.comparison.before.get(facts.primary)
        if base is not None:
            eval_ax.axhline(base, color="#9aa0a6", linestyle="--", linewidth=1, label=f"base ({facts.name})")
    loss_ax.set(title="training loss", xlabel="step")
    eval_ax.set(title=f"eval {runs[0].primary}" + ("" if any_eval else " (no in-training evaluation)"),
                xlabel="step")
    for ax in (loss_ax, eval_ax):
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=.3)
    return figure(fig, "Loss and the eval metric over training; the circle marks the checkpoint kept as final/.")


def _what_ran(facts: RunFacts) -> str:
    rows = [[esc(k), esc(v)] for k, v in _details(facts.run)]
    return table(["", ""], rows, numeric_from=99) if rows else "<p class=\"muted\">summary.md is missing</p>"


def _samples(facts: RunFacts) -> str:
    rows = _rows(facts.run.samples)
    if not rows:
        return ""
    steps = list(dict.fromkeys(r.get("step") for r in rows))  # in the order the evaluations ran
    by_prompt: dict[str, dict] = {}
    for r in rows:
        by_prompt.setdefault(str(r.get("prompt", "")), {})[r.get("step")] = r.get("generated", "")
    body = [[esc(prompt[-300:])] + [esc(str(answers.get(s, ""))[:400]) for s in steps]
            for prompt, answers in list(by_prompt.items())[:8]]
    header = ["prompt"] + ["final" if s is None else f"step {s}" for s in steps]
    return section("The fixed eval prompts, answer by answer", table(header, body, numeric_from=99), "samples")


def _sample(facts: RunFacts):
    """(eval split, sampled query ids with a gold document each, a hard negative per query from BM25), or None."""
    from ragtune.config.load import load_config
    from ragtune.data.embed import load_embed_data
    from ragtune.retrieval.bm25 import BM25Retriever

    cfg = load_config(facts.task, facts.run.config)
    ir = load_embed_data(cfg.data, cfg.train.seed).eval
    judged = [q for q in ir.queries if any(s > 0 and d in ir.corpus for d, s in ir.qrels.get(q, {}).items())]
    picked = random.Random(0).sample(judged, min(SAMPLE_QUERIES, len(judged)))
    gold = {q: next(d for d, s in ir.qrels[q].items() if s > 0 and d in ir.corpus) for q in picked}
    hits = BM25Retriever.build(ir.corpus).search([ir.queries[q] for q in picked], 20)
    negative = {}
    for q, found in zip(picked, hits):
        relevant = {d for d, s in ir.qrels[q].items() if s > 0}
        negative[q] = next((d for d, _ in found if d not in relevant), None)
    return cfg, ir, picked, gold, negative


def _embedding_views(facts: RunFacts) -> str:
    import numpy as np
    from sklearn.manifold import TSNE

    from ragtune.models.device import choose_placement
    from ragtune.models.load import load_embedder
    from ragtune.retrieval.dense import encode, model_prompts

    cfg, ir, picked, gold, negative = _sample(facts)
    placement = choose_placement("cpu", "fp32")
    plt = pyplot()
    maps, sims = plt.subplots(1, 2, figsize=(11, 4.6)), plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
    for column, (label, name) in enumerate((("before", cfg.model.name), ("after", str(facts.run.final)))):
        model = load_embedder(name, placement)
        query_prompt, document_prompt = model_prompts(model, cfg)
        queries = encode(model, [ir.queries[q] for q in picked], placement, prompt=query_prompt)
        docs = encode(model, [ir.corpus[gold[q]] for q in picked], placement, prompt=document_prompt)
        points = TSNE(n_components=2, perplexity=min(15, len(picked) - 1), init="pca", random_state=0) \
            .fit_transform(np.vstack([queries, docs]))
        ax = maps[1][column]
        n = len(picked)
        for i in range(n):
            ax.plot(points[[i, n + i], 0], points[[i, n + i], 1], color="#b0b7c3", linewidth=.8, zorder=1)
        ax.scatter(points[:n, 0], points[:n, 1], s=18, color="#1a73e8", label="query", zorder=2)
        ax.scatter(points[n:, 0], points[n:, 1], s=18, color="#e37400", marker="s", label="gold document", zorder=2)
        distance = float(np.mean(np.linalg.norm(points[:n] - points[n:], axis=1)))
        ax.set(title=f"{label}: mean query-to-gold distance {distance:.1f}", xticks=[], yticks=[])
        ax.legend(fontsize=8)
        with_negative = [i for i, q in enumerate(picked) if negative[q]]
        negatives = encode(model, [ir.corpus[negative[picked[i]]] for i in with_negative], placement,
                           prompt=document_prompt)
        positive_sim = (queries * docs).sum(1)
        negative_sim = (queries[with_negative] * negatives).sum(1)
        axis = sims[1][column]
        bins = np.linspace(min(positive_sim.min(), negative_sim.min(), 0), 1, 25)
        axis.hist(positive_sim, bins=bins, alpha=.6, color="#1a73e8", label="query · gold document")
        axis.hist(negative_sim, bins=bins, alpha=.6, color="#d93025", label="query · BM25 hard negative")
        axis.set(title=f"{label}: similarity", xlabel="cosine")
        axis.legend(fontsize=8)
    return section("The embedding space", "<div class=\"row\">" + figure(
        maps[0], f"t-SNE of {len(picked)} eval queries and their gold documents, before and after; a line joins each "
        "query to its document.") + figure(sims[0], "Similarity of each query to its gold document and to the top "
                                           "BM25 result that is not relevant.") + "</div>", "embedding-space")


def _reranker_views(facts: RunFacts) -> str:
    import numpy as np

    from ragtune.models.device import choose_placement
    from ragtune.models.load import load_cross_encoder
    from ragtune.retrieval.rerank import Reranker

    cfg, ir, picked, gold, negative = _sample(facts)
    placement = choose_placement("cpu", "fp32")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    pairs = [(q, gold[q], negative[q]) for q in picked if negative[q]]
    for column, (label, name, new_head) in enumerate((("before", cfg.model.name, True),
                                                      ("after", str(facts.run.final), False))):
        reranker = Reranker(load_cross_encoder(name, placement, new_head=new_head), placement)
        scores = np.array([reranker.score(ir.queries[q], [ir.corpus[p], ir.corpus[n]]) for q, p, n in pairs])
        bins = np.linspace(scores.min(), scores.max() + 1e-6, 25)
        axes[column].hist(scores[:, 0], bins=bins, alpha=.6, color="#1a73e8", label="gold document")
        axes[column].hist(scores[:, 1], bins=bins, alpha=.6, color="#d93025", label="BM25 hard negative")
        ahead = float((scores[:, 0] > scores[:, 1]).mean())
        axes[column].set(title=f"{label}: gold ahead in {ahead:.0%} of pairs", xlabel="score")
        axes[column].legend(fontsize=8)
    return section("Reranker scores", figure(fig, f"Scores of {len(pairs)} eval queries' gold documents against the "
                                             "top BM25 result that is not relevant, before and after."), "scores")


VIEWS = {"embed": _embedding_views, "rerank": _reranker_views}


def _task_views(facts: RunFacts) -> str:
    view = VIEWS.get(facts.task)
    if view is None:
        return _samples(facts)
    try:
        return view(facts)
    except Exception as exc:  # noqa: BLE001 (a view must never cost the report; it says why it is missing)
        log.warning("report: the %s views were left out (%s)", facts.task, exc)
        return section("Model views", f"<p class=\"muted\">left out: {esc(exc)}</p>", "views")


def write_run_report(path: str | Path) -> Path:
    """RUN/report.html for one finished run."""
    facts = RunFacts(path)
    config = _text(facts.run.config)
    sections = [f"<h1>ragtune train {esc(facts.task)}: {esc(facts.name)}</h1>", _verdict(facts),
                section("Before and after", _before_after(facts), "before-after"),
                section("Training", _curves([facts]), "training"),
                section("What ran", _what_ran(facts), "what-ran"),
                _task_views(facts),
                section("Config", f"<pre>{esc(config)}</pre>", "config")]
    out = facts.run.report
    write_atomic(out, page(f"ragtune: {facts.name}", sections))
    return out


def write_comparison(path_a: str | Path, path_b: str | Path, out: str | Path | None = None) -> Path:
    """An HTML page comparing two finished runs: both verdicts, their after-metrics side by side, both curves."""
    a, b = RunFacts(path_a), RunFacts(path_b)
    metrics = [m for m in a.after["metrics"] if m in b.after["metrics"]]
    rows, classes = [], []
    for m in metrics:
        x, y = a.after["metrics"][m], b.after["metrics"][m]
        arrow = "up" if y > x else "down" if y < x else ""
        rows.append([esc(m), f"{x:.4f}", f"{y:.4f}", f'<span class="{arrow}">{y - x:+.4f}</span>'])
        classes.append("primary" if m == a.primary else "")
    sections = [f"<h1>{esc(a.name)} against {esc(b.name)}</h1>",
                f"<p>{esc(a.name)}: {esc(a.comparison.verdict)}<br>{esc(b.name)}: {esc(b.comparison.verdict)}</p>",
                section("After, side by side", table(["metric", a.name, b.name, "B - A"], rows, classes=classes),
                        "after"),
                section("Training", _curves([a, b]), "training")]
    target = Path(out) if out else b.run.path / f"compare-{a.name}.html"
    write_atomic(target, page(f"ragtune: {a.name} against {b.name}", sections))
    return target
