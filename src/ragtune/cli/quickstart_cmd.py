"""`ragtune quickstart`: the main job on the embedded PubMedQA default, offline."""

from __future__ import annotations

import time
from importlib import resources
from typing import Optional

import typer

from ragtune.cli.output import RichReporter, say
from ragtune.cli.train_cmd import ALLOW, render_result


def packaged(name: str) -> str:
    return str(resources.files("ragtune") / "resources" / name)


def quickstart(overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides, e.g. train.max_steps=20"),
               allow_regression: bool = ALLOW) -> int:
    """Fine-tune all-MiniLM-L6-v2 on PubMedQA (500 questions) and show before/after on the official test set."""
    from ragtune.config import load_config
    from ragtune.train.embed import train_embed

    run_dir = f"runs/quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = load_config("embed", packaged("quickstart.yaml"),
                      [f"data.train={packaged('pubmedqa')}", f"output.dir={run_dir}", *(overrides or [])])
    say("[bold]ragtune quickstart[/]: fine-tune all-MiniLM-L6-v2 on PubMedQA PQA-L (500 train questions), "
        "evaluate on the official 500 test questions against 3,358 passages")
    result = train_embed(cfg, reporter=RichReporter())
    return render_result(result, allow_regression)
