"""`ragtune doctor [--config FILE]`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ragtune.cli.output import FLAGS, emit_json, errors, show, table


def doctor(config: Optional[Path] = typer.Option(None, "--config", "-c", help="also validate this config and its data"),
           task: Optional[str] = typer.Option(None, "--task", help="the task the config is for: embed, rerank, llm, "
                                              "seq2seq, ...; default: the config's own `task:`, else embed")) -> int:
    """Check the environment (versions, devices, bf16, disk, default model) and optionally a config."""
    from ragtune.doctor import config_checks, environment_checks

    checks = environment_checks() + (config_checks(task, str(config)) if config else [])
    failed = [c for c in checks if not c.ok]
    if FLAGS.json:
        emit_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
    else:
        show(table("ragtune doctor", ["check", "status", "detail"],
                   [[c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", escape(c.detail)] for c in checks]))
        for c in failed:
            errors.print(f"[bold red]error:[/] {c.name}: {escape(c.detail)} (fix: {escape(c.fix)})", soft_wrap=True)
    return 2 if failed else 0
