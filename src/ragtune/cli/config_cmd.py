"""`ragtune config show TASK`."""

from __future__ import annotations

import typer

from ragtune.cli.output import FLAGS, emit_json, show, table

app = typer.Typer(no_args_is_help=True, help="Inspect config schemas.")


@app.command("show")
def show_config(task: str = typer.Argument(..., help="embed")) -> int:
    """Print every option of TASK with its default and a one-line help."""
    from ragtune.choices import unknown
    from ragtune.config.show import option_rows
    from ragtune.config.tasks import TASKS
    from ragtune.errors import ConfigError

    if task not in TASKS:
        raise ConfigError(unknown("task", task, TASKS))
    rows = option_rows(TASKS[task])
    if FLAGS.json:
        emit_json(rows)
        return 0
    command = f"ragtune train {task}" if task in ("embed", "rerank", "llm", "seq2seq") else f"{task} settings"
    show(table(f"{command}: options (override with key=value)", ["key", "type", "default", "help"],
               [[r["key"], r["type"], r["default"], r["help"]] for r in rows]))
    return 0
