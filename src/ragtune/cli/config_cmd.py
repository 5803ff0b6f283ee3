"""`ragtune config show TASK`."""

from __future__ import annotations

import typer

from ragtune.cli.output import FLAGS, emit_json, show, table

app = typer.Typer(no_args_is_help=True, help="Inspect config schemas.")


@app.command("show")
def show_config(task: str = typer.Argument(..., help="embed, rerank, llm, seq2seq, retrieval, mine or query")) -> int:
    """Print every option of TASK with its default and a one-line help."""
    from ragtune.config.show import option_rows
    from ragtune.tasks import task as find_task

    found = find_task(task)
    rows = option_rows(found.config_class())
    if FLAGS.json:
        emit_json(rows)
        return 0
    show(table(f"{found.heading}: options (override with key=value)", ["key", "type", "default", "help"],
               [[r["key"], r["type"], r["default"], r["help"]] for r in rows]))
    return 0
