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
