"""`ragtune data validate FILE`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ragtune.cli.output import FLAGS, emit_json, say, show, table

app = typer.Typer(no_args_is_help=True, help="Check and prepare training data.")


@app.command("validate")
def validate(
    path: Path = typer.Argument(..., help="a data file, a folder of files, a saved HF dataset or a BEIR directory"),
    format: str = typer.Option("auto", "--format", help="auto, pairs, triplets, scored_pairs"),
    column: Optional[list[str]] = typer.Option(None, "--column", help="ROLE=FIELD, e.g. anchor=title (repeatable)"),
) -> int:
    """Print the detected format, counts, duplicates, empty texts and length statistics."""
    from ragtune.config.load import apply_overrides
    from ragtune.data.validate import validate_path

    columns = apply_overrides({}, column or [])
    report = validate_path(path, format, {k: str(v) for k, v in columns.items()})
    if FLAGS.json:
        emit_json(asdict(report))
        return 0
    say(f"[bold]{escape(report.path)}[/]: format [cyan]{report.format}[/]")
    show(table("counts", ["what", "count"], [[k, v] for k, v in report.counts.items()]))
    show(table("length in words", ["column", "min", "mean", "p95", "max"],
               [[c, s["min"], f"{s['mean']:.1f}", s["p95"], s["max"]] for c, s in report.lengths.items()]))
    for problem in report.problems:
        say(f"[yellow]warning:[/] {escape(problem)}")
    say("[green]ok[/]" if not report.problems else f"{len(report.problems)} warning(s)")
    return 0


@app.command("mine")
def mine(
    data: Path = typer.Argument(..., help="(query, positive) pairs file, or a BEIR directory"),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file to write (triplets, n-tuples or labelled pairs)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="mining settings, e.g. num_negatives=5 "
                                                    "retriever=hybrid(bm25,dense:MODEL) range_max=30"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="mining settings file (YAML/JSON)"),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="corpus.jsonl or BEIR directory to mine from; "
                                          "default: the data's own documents"),
    split: str = typer.Option("train", "--split", help="qrels split of a BEIR directory"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps"),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16"),
) -> int:
    """Mine hard negatives for each pair with BM25, dense or hybrid retrieval; print what each filter removed."""
    from ragtune.config import load_config
    from ragtune.data.mine import mine_to_file

    settings = load_config("mine", config, overrides or [])
    report = mine_to_file(str(data), str(out), settings, str(corpus) if corpus else None, split, device, precision)
    if FLAGS.json:
        emit_json({"out": str(out), "pairs": report.pairs, "candidates": report.candidates,
                   "removed": dict(report.removed), "negatives": report.negatives, "short_pairs": report.short_pairs})
        return 0
    show(table("hard-negative mining", ["step", "count"],
               [["pairs", report.pairs], ["candidates retrieved", report.candidates],
                *[[f"removed: {k}", v] for k, v in report.removed.items()],
                ["negatives kept", report.negatives], ["pairs short of negatives", report.short_pairs]]))
    say(f"wrote {escape(str(out))} ({settings.output})")
    return 0
