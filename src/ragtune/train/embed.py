"""Embedding fine-tuning recipe: config -> data -> model -> before -> train -> after -> report.

Built on sentence-transformers' SentenceTransformerTrainer; ragtune adds the run directory, the held-out
before/after evaluation and the regression verdict.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ragtune.config import EmbedConfig, dump_config
from ragtune.data.embed import load_embed_data
from ragtune.eval.report import Comparison, summary_markdown
from ragtune.eval.retrieval import evaluate_model, ir_evaluator
from ragtune.models.device import choose_placement
from ragtune.models.load import load_embedder
from ragtune.progress import Reporter
from ragtune.train.bucketing import length_bucketing
from ragtune.train.callbacks import EvaluateAtEndCallback, RunLogCallback
from ragtune.train.losses import build_loss, check_loss_fits
from ragtune.train.run_dir import newest_checkpoint, prepare_run_dir
from ragtune.train.run_log import run_logging
from ragtune.train.trainer_args import build_training_args, training_kwargs
from ragtune.utils import is_main_process, write_atomic, write_json

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    comparison: Comparison | None  # None on non-main ranks
    train_seconds: float = 0.0
    train_examples: int = 0


def _prompt_map(cfg: EmbedConfig, columns: list[str]) -> dict[str, str] | None:
    query, document = cfg.prompts.query, cfg.prompts.document
    prompts = {}
    for column in columns:
        prompt = query if column in ("anchor", "sentence1") else None if column == "score" else document
        if prompt:
            prompts[column] = prompt
    return prompts or None


def _metrics_at(log_history: list[dict], step: int | None) -> dict[str, float] | None:
    """The evaluator's metrics logged at `step`, without the eval_ prefix."""
    for entry in log_history:
        if entry.get("step") == step and any(k.startswith("eval_") and "@" in k for k in entry):
            return {k[5:]: v for k, v in entry.items() if k.startswith("eval_") and "@" in k}
    return None


def train_embed(cfg: EmbedConfig, resume: bool = False, overwrite: bool = False,
                reporter: Reporter | None = None) -> TrainResult:
    """Fine-tune an embedder as `cfg` says and evaluate it before and after on the same held-out split."""
    import datasets
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers.trainer_callback import PrinterCallback

    reporter = reporter or Reporter()
    # Everything that can be checked without weights is checked first.
    data = load_embed_data(cfg.data, cfg.train.seed)
    scores = [r["score"] for r in data.train.rows] if data.train.format == "scored_pairs" else None
    check_loss_fits(cfg.loss, data.train.format, scores)
    placement = choose_placement(cfg.model.device, cfg.model.precision)
    model = load_embedder(cfg.model.name, placement, cfg.model.max_seq_length)
    loss = build_loss(model, cfg.loss, cfg.loss_args, cfg.matryoshka_dims)
    if cfg.data.hard_negatives:
        from ragtune.data.mine import mine_for_training, mining_tools

        with reporter.phase("Mining hard negatives"):
            tools = mining_tools(cfg.data.hard_negatives, data.eval.corpus, cfg.model.name, placement)
            data.train, mining = mine_for_training(data.train, data.eval.corpus, cfg.data.hard_negatives, *tools)
        for line in mining.lines():
            reporter.note(f"hard negatives: {line}")
    # Only now, with every input checked, is the run directory touched.
    run_dir = Path(cfg.output.dir)
    if is_main_process():
        prepare_run_dir(run_dir, resume, overwrite)
        write_atomic(run_dir / "config.yaml", dump_config(cfg))

    with run_logging(run_dir / "train.log"):
        reporter.note(f"device {placement.device}, precision {placement.precision} ({placement.reason})")
        reporter.note(f"data: {len(data.train.rows)} {data.train.format} training examples; eval {data.eval.name}: "
                      f"{len(data.eval.queries)} queries over {len(data.eval.corpus)} documents")
        for warning in data.train.warnings[:20]:
            log.warning(warning)

        before_path = run_dir / "eval_before.json"
        before = None
        if is_main_process():
            if resume and before_path.is_file():
                import json

                before = json.loads(before_path.read_text(encoding="utf-8"))["metrics"]
            else:
                with reporter.phase("Evaluating the base model"):
                    before = evaluate_model(model, data.eval, cfg.eval, placement, cfg.prompts).metrics
                write_json(before_path, {"model": cfg.model.name, "split": data.eval.name, "metrics": before})

        train_dataset = datasets.Dataset.from_list(data.train.rows)
        kwargs = training_kwargs(cfg.train, run_dir, placement, cfg.eval.primary_metric, show_progress=False)
        kwargs.update(batch_sampler=cfg.train.batch_sampler, prompts=_prompt_map(cfg, data.train.columns))
        args = build_training_args(SentenceTransformerTrainingArguments, kwargs)
        callbacks = [RunLogCallback(run_dir, cfg.eval.primary_metric), EvaluateAtEndCallback(),
                     *reporter.trainer_callbacks()]
        if cfg.train.early_stopping_patience:
            from transformers import EarlyStoppingCallback

            callbacks.append(EarlyStoppingCallback(cfg.train.early_stopping_patience))
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                             evaluator=ir_evaluator(data.eval, cfg.eval, placement, cfg.prompts),
                                             callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)  # metrics.jsonl and the CLI display the logs instead
        checkpoint = newest_checkpoint(run_dir) if resume else None
        if checkpoint:
            log.info("resuming from %s", checkpoint)
        with length_bucketing(model, cfg.train.length_buckets):
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        train_seconds = float(output.metrics.get("train_runtime", 0.0))
        if not is_main_process():
            return TrainResult(run_dir, None, train_seconds, len(train_dataset))

        final, staging = run_dir / "final", run_dir / ".final.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)

        best_step = int(trainer.state.best_model_checkpoint.rsplit("-", 1)[1]) \
            if trainer.state.best_model_checkpoint else None
        after = _metrics_at(trainer.state.log_history, best_step)
        if after is None:
            with reporter.phase("Evaluating the tuned model"):
                after = evaluate_model(model, data.eval, cfg.eval, placement, cfg.prompts).metrics
        write_json(run_dir / "eval_after.json", {"model": str(final), "split": data.eval.name, "metrics": after,
                                                 "best_step": best_step})
        comparison = Comparison(cfg.eval.primary_metric, before, after)
        details = {"model": cfg.model.name, "data": str(cfg.data.train), "eval split": data.eval.name,
                   "train examples": str(len(train_dataset)), "loss": cfg.loss,
                   "device": f"{placement.device} / {placement.precision}",
                   "train time": f"{train_seconds:.1f} s", "final model": str(final)}
        write_atomic(run_dir / "summary.md", summary_markdown(comparison, f"ragtune train embed: {run_dir.name}",
                                                              details))
        log.info(comparison.verdict)
        return TrainResult(run_dir, comparison, train_seconds, len(train_dataset))
