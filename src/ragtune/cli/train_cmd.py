"""`ragtune train TASK -c CONFIG [key=value ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ragtune.cli.output import FLAGS, RichReporter, emit_json, say, show, table
from ragtune.config import load_config
from ragtune.tasks import TASKS, Task, training_tasks

app = typer.Typer(no_args_is_help=True, help="Fine-tune a model; every run is evaluated before and after.")

CONFIG = typer.Option(None, "--config", "-c", help="YAML/JSON config file")
OVERRIDES = typer.Argument(None, help="dotted overrides, e.g. train.learning_rate=3e-5 model.name=PATH")
RESUME = typer.Option(False, "--resume", help="continue from the newest complete checkpoint")
OVERWRITE = typer.Option(False, "--overwrite", help="replace an existing run directory")
ALLOW = typer.Option(False, "--allow-regression", help="exit 0 even if no tuned checkpoint beats its base")


HEADLINE = ("ndcg@10", "mrr@10", "map@100", "recall@10", "recall@100", "accuracy@1", "perplexity", "rouge_l",
            "bleu", "chrf", "exact_match", "f1", "accuracy", "embedding_similarity")


def render_result(result, allow_regression: bool) -> int:
    """Print the before/after table and the verdict; return the exit code (1 on an unallowed regression)."""
    comparison = result.comparison
    if FLAGS.json:
        emit_json({"run_dir": str(result.run_dir), "primary_metric": comparison.primary_metric,
                   "before": comparison.before, "after": comparison.after, "regressed": comparison.regressed,
                   "kept_base": comparison.kept_base, "p_values": comparison.p_values,
                   "train_seconds": result.train_seconds})
    headline = {comparison.primary_metric, *HEADLINE}
    from ragtune.eval.report import greater_is_better

    def colour(metric: str, delta: float) -> str:
        better = delta > 0 if greater_is_better(metric) else delta < 0
        return "[green]" if better else "[red]" if delta else ""

    tested = comparison.tested
    rows = [[m, b, a, f"{colour(m, d)}{d:+.4f}", *([comparison.significance(m)] if tested else [])]
            for m, b, a, d in comparison.rows() if m in headline or FLAGS.verbose]
    show(table("before / after on the held-out split (all metrics: eval_after.json, -v)",
               ["metric", "before", "after", "delta", *(["p"] if tested else [])], rows))
    if tested:
        say(comparison.test_note)
    if comparison.failed:
        if not FLAGS.json:
            from ragtune.cli.output import errors

            errors.print(f"[bold red]{comparison.verdict}[/]")
        say(f"run directory: {result.run_dir}")
        return 0 if allow_regression else 1
    say(f"[bold green]{comparison.verdict}[/]")
    say(f"run directory: {result.run_dir}  (model: {Path(result.run_dir) / 'final'})")
    return 0


def _train(task: str, config: Optional[Path], overrides: Optional[list[str]], resume: bool, overwrite: bool,
           allow_regression: bool) -> int:
    cfg = load_config(task, config, overrides or [])
    result = TASKS[task].run(cfg, resume=resume, overwrite=overwrite, reporter=RichReporter())
    if result.comparison is None:  # a non-main rank under torchrun
        return 0
    return render_result(result, allow_regression)


def _command(task: Task):
    """`ragtune train TASK`, the same options for every task in the task table."""

    def train(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES, resume: bool = RESUME,
              overwrite: bool = OVERWRITE, allow_regression: bool = ALLOW) -> int:
        return _train(task.name, config, overrides, resume, overwrite, allow_regression)

    train.__doc__ = task.help
    return train


def embed(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES, resume: bool = RESUME,
          overwrite: bool = OVERWRITE, allow_regression: bool = ALLOW,
          recipe: str = typer.Option("single", "--recipe", help="single: train the config as given; auto: try a "
                                     "few learning rates with and without mined negatives on the dev split and "
                                     "keep the best (RUN/auto.json says what was tried)"),
          budget: Optional[str] = typer.Option(None, "--budget", help="time budget for --recipe auto, e.g. 20m; "
                                               "the first trial always runs")) -> int:
    from ragtune.choices import unknown
    from ragtune.errors import ConfigError

    if recipe not in ("single", "auto"):
        raise ConfigError(unknown("--recipe", recipe, ("single", "auto")))
    if recipe == "single":
        if budget is not None:
            raise ConfigError("--budget is for --recipe auto; add --recipe auto or drop --budget")
        return _train("embed", config, overrides, resume, overwrite, allow_regression)
    from ragtune.train.auto_recipe import parse_budget, train_embed_auto

    seconds = parse_budget(budget)
    cfg = load_config("embed", config, overrides or [])
    return render_result(train_embed_auto(cfg, seconds, resume, overwrite, RichReporter()), allow_regression)


for _task in training_tasks():  # embed has --recipe and --budget besides
    app.command(_task.name, help=_task.help)(embed if _task.name == "embed" else _command(_task))
