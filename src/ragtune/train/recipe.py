"""The pieces every training recipe shares: run directory, before/after evaluation, callbacks, final save.

A recipe reads top to bottom (config -> data -> model -> before -> train -> after -> report) and calls these.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ragtune.config import dump_config
from ragtune.config.schema import TaskConfig
from ragtune.eval.report import Comparison, summary_markdown
from ragtune.progress import Reporter
from ragtune.train.callbacks import EvaluateAtEndCallback, RunLogCallback
from ragtune.train.run_dir import newest_checkpoint, prepare_run_dir
from ragtune.utils import is_main_process, write_atomic, write_json

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    comparison: Comparison | None  # None on non-main ranks
    train_seconds: float = 0.0
    train_examples: int = 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch before any weights are created, so a run (and its resume) is repeatable."""
    from transformers import set_seed

    set_seed(seed)


def set_dropout(model, p: float | None) -> None:
    """Set every dropout of `model` to `p` (None keeps the model's own): nn.Dropout layers, and the float
    `attention_dropout` that many attention modules pass to their kernel. The saved config keeps its values."""
    if p is None:
        return
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p


def open_run(cfg: TaskConfig, resume: bool, overwrite: bool) -> Path:
    """Create (or reopen) the run directory and write the resolved config; call only after every input is checked."""
    run_dir = Path(cfg.output.dir)
    if is_main_process():
        prepare_run_dir(run_dir, resume, overwrite)
        write_atomic(run_dir / "config.yaml", dump_config(cfg))
    return run_dir


def evaluate_before(run_dir: Path, resume: bool, reporter: Reporter, model_name: str, split: str,
                    compute: Callable[[], dict[str, float]], label: str = "Evaluating the base model"):
    """eval_before.json: computed once (a resumed run reuses it); None on non-main ranks."""
    path = run_dir / "eval_before.json"
    if not is_main_process():
        return None
    if resume and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["metrics"]
    with reporter.phase(label):
        before = compute()
    write_json(path, {"model": model_name, "split": split, "metrics": before})
    return before


def callbacks(run_dir: Path, cfg: TaskConfig, reporter: Reporter) -> list:
    """metrics.jsonl/progress.json, a last-step evaluation, the display, and early stopping when asked."""
    found = [RunLogCallback(run_dir, cfg.eval.primary_metric), EvaluateAtEndCallback(), *reporter.trainer_callbacks()]
    if cfg.train.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        found.append(EarlyStoppingCallback(cfg.train.early_stopping_patience))
    return found


def train(trainer, run_dir: Path, resume: bool) -> float:
    """Run the trainer (from the newest complete checkpoint when resuming); return the training seconds."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # metrics.jsonl and the CLI display the logs instead
    checkpoint = newest_checkpoint(run_dir) if resume else None
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return float(output.metrics.get("train_runtime", 0.0))


def save_final(save: Callable[[str], None], run_dir: Path) -> Path:
    """Write the model to final/ through a staging folder, so final/ is always complete."""
    final, staging = run_dir / "final", run_dir / ".final.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    save(str(staging))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final


def best_step(trainer) -> int | None:
    best = trainer.state.best_model_checkpoint
    return int(best.rsplit("-", 1)[1]) if best else None


def logged_metrics(log_history: list[dict], step: int | None, primary_metric: str) -> dict[str, float] | None:
    """The evaluator's metrics logged at `step`, without the eval_ prefix (None when that step has none)."""
    for entry in log_history:
        if entry.get("step") == step and f"eval_{primary_metric}" in entry:
            return {k[5:]: v for k, v in entry.items() if k.startswith("eval_")
                    and not k.endswith(("_runtime", "_per_second"))}
    return None


def conclude(trainer, run_dir: Path, save: Callable[[str], None], primary_metric: str,
             evaluate_after: Callable[[], dict[str, float]]) -> tuple[Path, int | None, dict[str, float]]:
    """Save final/, then return it with the best step and the tuned model's metrics: those the evaluator logged at
    the best step, or a fresh evaluation when none was logged there."""
    final = save_final(save, run_dir)
    best = best_step(trainer)
    after = logged_metrics(trainer.state.log_history, best, primary_metric)
    return final, best, after if after is not None else evaluate_after()


def save_with_tokenizer(model, tokenizer) -> Callable[[str], None]:
    def save(path: str) -> None:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return save


def finish(run_dir: Path, cfg: TaskConfig, before: dict, after: dict, final: Path, split: str,
           details: dict[str, str], title: str, best: int | None = None) -> Comparison:
    """eval_after.json and summary.md (the before/after table and the verdict)."""
    write_json(run_dir / "eval_after.json", {"model": str(final), "split": split, "metrics": after,
                                             "best_step": best})
    comparison = Comparison(cfg.eval.primary_metric, before, after)
    write_atomic(run_dir / "summary.md", summary_markdown(comparison, title, {**details, "final model": str(final)}))
    log.info(comparison.verdict)
    return comparison
