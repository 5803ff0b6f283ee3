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
from ragtune.eval.report import Comparison, ScoreBook, paired_comparison, rounded, summary_markdown
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir, newest_checkpoint, prepare_run_dir
from ragtune.train.callbacks import EvaluateAtEndCallback, RunLogCallback
from ragtune.train.trackers import check_installed, quiet_callbacks
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
    check_installed(cfg.train.report_to)
    if is_main_process():
        prepare_run_dir(run_dir, resume, overwrite)
        write_atomic(RunDir(run_dir).config, dump_config(cfg))
    return run_dir


def evaluate_before(run_dir: Path, resume: bool, reporter: Reporter, model_name: str, split: str,
                    compute: Callable[[], dict[str, float]], book: ScoreBook,
                    label: str = "Evaluating the base model"):
    """eval_before.json, with the per-example scores `compute` kept in `book.before`: computed once (a resumed run
    reuses it); None on non-main ranks."""
    path = RunDir(run_dir).eval_before
    if not is_main_process():
        return None
    if resume and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        book.before = saved.get("per_example")
        return saved["metrics"]
    with reporter.phase(label):
        before = compute()
    write_json(path, {"model": model_name, "split": split, "metrics": before, "per_example": rounded(book.before)})
    return before


def base_evaluation(evaluator, model, book: ScoreBook) -> Callable[[], dict[str, float]]:
    """The base model's evaluation by a generation evaluator (as step 0), its per-example scores kept as `before`."""
    def evaluate() -> dict[str, float]:
        metrics = evaluator(model, step=0)
        book.before = book.by_step.get(0)
        return metrics

    return evaluate


def callbacks(run_dir: Path, cfg: TaskConfig, reporter: Reporter) -> list:
    """metrics.jsonl/progress.json, a last-step evaluation, the display, and early stopping when asked."""
    found = [RunLogCallback(run_dir, cfg.eval.primary_metric), EvaluateAtEndCallback(), *reporter.trainer_callbacks()]
    if cfg.train.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        found.append(EarlyStoppingCallback(cfg.train.early_stopping_patience))
    return found


def _resume_point(run_dir: Path, reporter: Reporter) -> Path | None:
    """The checkpoint to resume from, said on the console; a warning when there is none yet."""
    folder = RunDir(run_dir).checkpoints
    partial = sorted(p.name for p in folder.glob("checkpoint-*")) if folder.is_dir() else []
    checkpoint = newest_checkpoint(run_dir)
    if checkpoint:
        reporter.note(f"resuming from {checkpoint} (step {checkpoint.name.split('-')[1]})")
        return checkpoint
    found = f"only incomplete checkpoints ({', '.join(partial)}), removed" if partial else "no checkpoint"
    log.warning("--resume: %s holds %s; training starts again from step 0", folder, found)
    return None


def train(trainer, run_dir: Path, resume: bool, reporter: Reporter) -> float:
    """Run the trainer (from the newest complete checkpoint when resuming); return the training seconds."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # metrics.jsonl and the CLI display the logs instead
    quiet_callbacks(trainer)
    checkpoint = _resume_point(run_dir, reporter) if resume else None
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return float(output.metrics.get("train_runtime", 0.0))


def save_final(save: Callable[[str], None], run_dir: Path) -> Path:
    """Write the model to final/ through a staging folder, so final/ is always complete."""
    final, staging = RunDir(run_dir).final, RunDir(run_dir).final_staging
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
             evaluate_after: Callable[[], dict[str, float]],
             book: ScoreBook) -> tuple[Path, int | None, dict[str, float]]:
    """Save final/, then return it with the best step and the tuned model's metrics: those the evaluator logged at
    the best step, or a fresh evaluation (which keeps its scores under step None) when none was logged there.
    `book.after` becomes that evaluation's per-example scores."""
    final = save_final(save, run_dir)
    best = best_step(trainer)
    after = logged_metrics(trainer.state.log_history, best, primary_metric)
    scored_at = best  # where the after-metrics' per-example scores were kept
    if after is None:
        after, scored_at = evaluate_after(), None
    book.after = book.by_step.get(scored_at)
    return final, best, after


def keep_base_unless_beaten(run_dir: Path, primary_metric: str, before: dict, after: dict,
                            save_base: Callable[[str], None]) -> bool:
    """The base model (step 0) is a checkpoint candidate too: when no tuned checkpoint beat it on the held-out
    split, final/ becomes the base model. Returns whether it did."""
    if Comparison(primary_metric, before, after).improvement > 0:
        return False
    save_final(save_base, run_dir)
    log.warning("no checkpoint beat the base model on %s (%.4f against %.4f); %s is the base model",
                primary_metric, after[primary_metric], before[primary_metric], RunDir(run_dir).final)
    return True


def save_with_tokenizer(model, tokenizer) -> Callable[[str], None]:
    def save(path: str) -> None:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return save


def finish(run_dir: Path, cfg: TaskConfig, before: dict, after: dict, final: Path, split: str,
           details: dict[str, str], title: str, best: int | None = None, kept_base: bool = False, *,
           book: ScoreBook, model=None, added_tokens: list[str] = (), provenance: str | None = None) -> Comparison:
    """eval_after.json, summary.md (the before/after table with each metric's paired test over `book`'s
    per-example scores, and the verdict) and the model card in final/ (`model`: the sentence-transformers model,
    whose own card part is kept)."""
    from ragtune.models.resolve import resolve_model
    from ragtune.train.model_card import write_model_card

    write_json(RunDir(run_dir).eval_after, {"model": str(final), "split": split, "metrics": after,
                                             "best_step": best, "kept_base": kept_base,
                                             "per_example": rounded(book.after)})
    comparison = paired_comparison(cfg.eval.primary_metric, before, after, kept_base, rounded(book.before),
                                   rounded(book.after))  # as report.html recomputes it from the files
    write_atomic(RunDir(run_dir).summary, summary_markdown(comparison, title, {**details, "final model": str(final)}))
    write_model_card(final, cfg.task, run_dir, cfg.model.name, resolve_model(cfg.model.name),
                     getattr(cfg.data, "train", None), comparison, title, details, split, st_model=model,
                     added_tokens=list(added_tokens), provenance=provenance)
    write_report(run_dir)
    if cfg.train.report_to:
        from ragtune.train.trackers import log_summary

        log_summary(cfg.train, run_dir, comparison, best, dump_config(cfg))
    log.info(comparison.verdict)
    return comparison


def write_report(run_dir: Path) -> None:
    """RUN/report.html; a report that cannot be drawn costs a warning, never the run."""
    from ragtune.reports.run_report import write_run_report

    try:
        write_run_report(run_dir)
    except Exception as exc:  # noqa: BLE001 (the run and its proof are already written)
        log.warning("report.html was not written (%s); `ragtune report %s` tries again", exc, run_dir)
