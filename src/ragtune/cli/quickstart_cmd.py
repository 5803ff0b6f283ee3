"""`ragtune quickstart`: the main job on the embedded PubMedQA default, offline."""

from __future__ import annotations

import time
from typing import Optional

import typer

from ragtune.cli.output import RichReporter, say
from ragtune.cli.train_cmd import ALLOW, render_result
from ragtune.utils import packaged_resource


def quickstart(overrides: Optional[list[str]] = typer.Argument(None, help="`rag` for the whole stack; then dotted "
                                                            "overrides, e.g. train.max_steps=20"),
               allow_regression: bool = ALLOW) -> int:
    """Fine-tune all-MiniLM-L6-v2 on PubMedQA (500 questions) and show before/after on the official test set.
    `ragtune quickstart rag` tunes the embedder and then the generator, and compares the answers."""
    from ragtune.config import load_config

    overrides = list(overrides or [])
    if overrides[:1] == ["rag"]:
        return quickstart_rag(overrides[1:], allow_regression)
    from ragtune.train.embed import train_embed

    run_dir = f"runs/quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = load_config("embed", packaged_resource("quickstart.yaml"),
                      [f"data.train={packaged_resource('pubmedqa')}", f"output.dir={run_dir}", *overrides])
    say("[bold]ragtune quickstart[/]: fine-tune all-MiniLM-L6-v2 on PubMedQA PQA-L (500 train questions), "
        "evaluate on the official 500 test questions against 3,358 passages")
    result = train_embed(cfg, reporter=RichReporter())
    return render_result(result, allow_regression)


def quickstart_rag(overrides: list[str], allow_regression: bool) -> int:
    """The whole stack on PubMedQA: embedder, then generator (LoRA, contexts from the tuned embedder), then
    base + base against tuned + tuned on the test questions."""
    from pathlib import Path

    from ragtune.cli.output import FLAGS, emit_json, show, table
    from ragtune.rag.stack import parse_quickstart
    from ragtune.rag.stack import quickstart_rag as run

    settings = parse_quickstart(overrides)
    out = Path(f"runs/quickstart-rag-{time.strftime('%Y%m%d-%H%M%S')}")
    say(f"[bold]ragtune quickstart rag[/]: tune all-MiniLM-L6-v2, then SmolLM2-135M-Instruct (LoRA, "
        f"{settings.train_questions or 500} PubMedQA training questions, contexts from the tuned embedder); "
        f"answer {settings.test_questions or 500} test questions with base+base and tuned+tuned")
    started = time.perf_counter()
    report = run(out, settings, RichReporter())
    minutes = (time.perf_counter() - started) / 60
    if FLAGS.json:
        emit_json({**report, "minutes": round(minutes, 1), "out": str(out)})
    else:
        calibrated = (", label offsets fitted per generator on training questions the SFT did not use"
                      if report["label_offsets"][1] else "")
        show(table(f"PubMedQA test: base embedder + base generator -> tuned + tuned ({report['questions']} questions "
                   f"for labels{calibrated}, {report['free_text_questions']} in free text)", ["metric", "before", "after", "delta"],
                   [[m, f"{b:.4f}", f"{a:.4f}", f"{a - b:+.4f}"] for m, b, a in report["rows"]]))
        test = report["paired"]
        say(f"tuned against base labels: macro-F1 {test['delta_macro_f1']:+.4f} (paired bootstrap p = "
            f"{test['p_bootstrap']:.3g}), McNemar p = {test['p_mcnemar']:.3g}"
            + "".join(f"; {m} uncalibrated {b:.4f} -> {a:.4f}" for m, b, a in report.get("uncalibrated", [])))
        say(f"{'[green]every figure better' if report['better'] else '[red]not every figure better'}[/] after tuning; "
            f"{minutes:.1f} min; runs in {out}")
    return 0 if report["better"] or allow_regression else 1
