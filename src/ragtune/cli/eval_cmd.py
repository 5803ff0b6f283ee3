"""`ragtune eval retrieval --data BEIR_DIR --pipeline SPEC ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ragtune.cli.output import FLAGS, emit_json, say, show, table

app = typer.Typer(no_args_is_help=True, help="Evaluate models and pipelines on held-out data.")

HEADLINE = ["ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100"]


@app.command("retrieval")
def retrieval(
    data: Path = typer.Option(..., "--data", help="BEIR directory (corpus.jsonl, queries.jsonl, qrels/)"),
    split: str = typer.Option("test", "--split", help="qrels split to evaluate on"),
    pipeline: list[str] = typer.Option(..., "--pipeline", "-p", help="dense:MODEL; repeat to compare"),
    out: Optional[Path] = typer.Option(None, "--out", help="write results.json and results.md here"),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", min=1, help="evaluate a seeded sample of N queries"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps"),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16"),
) -> int:
    """Score retrieval pipelines side by side on one collection."""
    from ragtune.config.schema import EvalSection
    from ragtune.data.beir import load_beir
    from ragtune.data.embed import sample_queries
    from ragtune.eval.retrieval import evaluate_pipelines, parse_pipeline, write_results

    for spec in pipeline:
        parse_pipeline(spec)
    ir = sample_queries(load_beir(data, split), max_queries, seed=42)
    cfg = EvalSection()
    results = evaluate_pipelines(ir, pipeline, cfg, device=device, precision=precision)
    if out:
        write_results(out, results, ir.name, HEADLINE)
    if FLAGS.json:
        emit_json({"dataset": ir.name, "pipelines": [r.__dict__ for r in results]})
        return 0
    rows = [[r.name, *[r.metrics[m] for m in HEADLINE], f"{r.timings['index_build_s']:.1f}",
             f"{r.timings['query_ms_per_query']:.2f}"] for r in results]
    show(table(f"{ir.name}: {len(ir.queries)} queries, {len(ir.corpus)} documents",
               ["pipeline", *HEADLINE, "index s", "ms/query"], rows))
    if out:
        say(f"wrote {out / 'results.json'}")
    return 0
