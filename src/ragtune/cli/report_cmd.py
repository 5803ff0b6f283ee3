"""`ragtune report RUN_DIR [RUN_B] [--out FILE]`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ragtune.cli.output import FLAGS, emit_json, say


def report(run: Path = typer.Argument(..., help="a finished ragtune run directory"),
           other: Optional[Path] = typer.Argument(None, help="a second run: compare the two"),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="where a comparison goes (default: "
                                              "RUN_B/compare-RUN.html)")) -> int:
    """Rebuild RUN/report.html (curves, before/after, the model views), or compare two runs in one page."""
    from ragtune.reports.run_report import write_comparison, write_run_report

    path = write_comparison(run, other, out) if other is not None else write_run_report(run)
    if FLAGS.json:
        emit_json({"report": str(path)})
    else:
        say(f"wrote {escape(str(path))} (one self-contained file: open it in a browser)")
    return 0
