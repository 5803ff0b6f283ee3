"""`ragtune train TASK -c CONFIG [key=value ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ragtune.cli.output import FLAGS, RichReporter, emit_json, say, show, table
from ragtune.config import load_config

app = typer.Typer(no_args_is_help=True, help="Fine-tune a model; every run is evaluated before and after.")

CONFIG = typer.Option(None, "--config", "-c", help="YAML/JSON config file")
OVERRIDES = typer.Argument(None, help="dotted overrides, e.g. train.learning_rate=3e-5 model.name=PATH")
RESUME = typer.Option(False, "--resume", help="continue from the newest complete checkpoint")
OVERWRITE = typer.Option(False, "--overwrite", help="replace an existing run directory")
ALLOW = typer.Option(False, "--allow-regression", help="exit 0 even if the tuned model scores below its base")


HEADLINE = ("ndcg@10", "mrr@10", "map@100", "recall@10", "recall@100", "accuracy@1")


def render_result(result, allow_regression: bool) -> int:
    """Print the before/after table and the verdict; return the exit code (1 on an unallowed regression)."""
    comparison = result.comparison
    if FLAGS.json:
        emit_json({"run_dir": str(result.run_dir), "primary_metric": comparison.primary_metric,
                   "before": comparison.before, "after": comparison.after, "regressed": comparison.regressed,
                   "train_seconds": result.train_seconds})
    headline = {comparison.primary_metric, *HEADLINE}
    rows = [[m, b, a, f"{'[green]' if d > 0 else '[red]' if d < 0 else ''}{d:+.4f}"]
            for m, b, a, d in comparison.rows() if m in headline or FLAGS.verbose]
    show(table("before / after on the held-out split (all metrics: eval_after.json, -v)", ["metric", "before", "after", "delta"], rows))
    if comparison.regressed:
        if not FLAGS.json:
            from ragtune.cli.output import errors

            errors.print(f"[bold red]{comparison.verdict}[/]")
        say(f"run directory: {result.run_dir}")
        return 0 if allow_regression else 1
    say(f"[bold green]{comparison.verdict}[/]")
    say(f"run directory: {result.run_dir}  (model: {Path(result.run_dir) / 'final'})")
    return 0


@app.command("embed")
def embed(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES, resume: bool = RESUME,
          overwrite: bool = OVERWRITE, allow_regression: bool = ALLOW) -> int:
    """Fine-tune a sentence-transformers embedding model."""
    from ragtune.train.embed import train_embed

    cfg = load_config("embed", config, overrides or [])
    result = train_embed(cfg, resume=resume, overwrite=overwrite, reporter=RichReporter())
    if result.comparison is None:  # a non-main rank under torchrun
        return 0
    return render_result(result, allow_regression)
