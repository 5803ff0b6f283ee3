"""Late-interaction training recipe: config -> data (+ mined negatives, + teacher scores) -> model -> before ->
train -> after -> report.

Built on sentence-transformers' MultiVectorEncoderTrainer. A plain encoder (MiniLM by default) gets a fresh token
projection; 'before' is the first stage alone (eval.first_stage), 'after' that first stage plus MaxSim over its
top eval.rerank_k, on the same queries, as for a reranker.
"""

from __future__ import annotations

import logging

from ragtune.config.multivector import MultiVectorConfig
from ragtune.data.embed import load_embed_data
from ragtune.data.rerank import add_teacher_scores
from ragtune.eval.rerank import Candidates, rerank_evaluator
from ragtune.models.device import choose_placement, settle
from ragtune.models.load import load_multivector
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir
from ragtune.train import recipe
from ragtune.train.recipe import TrainResult
from ragtune.train.rerank import training_rows
from ragtune.train.run_log import run_logging
from ragtune.train.trainer_args import build_training_args, training_kwargs
from ragtune.utils import is_main_process

log = logging.getLogger(__name__)

CITATIONS = {"mnrl": "Khattab and Zaharia 2020 (ColBERT), trained with in-batch and mined negatives",
             "distill": "Santhanam et al. 2022 (ColBERTv2): KL divergence to a cross-encoder's scores"}


def build_loss(model, name: str, loss_args: dict):
    from sentence_transformers.multi_vector_encoder import losses

    from ragtune.errors import ConfigError

    cls = {"mnrl": losses.MultiVectorMultipleNegativesRankingLoss,
           "distill": losses.MultiVectorDistillKLDivLoss}[name]
    try:
        return cls(model, **loss_args)
    except TypeError as exc:
        raise ConfigError(f"loss_args for '{name}': {exc}; see the loss's documentation for its arguments") from None


def train_multivector(cfg: MultiVectorConfig, resume: bool = False, overwrite: bool = False,
                      reporter: Reporter | None = None) -> TrainResult:
    """Train a late-interaction model and compare first stage vs first stage + MaxSim on held-out queries."""
    import datasets
    from sentence_transformers.multi_vector_encoder import (
        MultiVectorEncoderTrainer,
        MultiVectorEncoderTrainingArguments,
    )

    reporter = reporter or Reporter()
    data = load_embed_data(cfg.data, cfg.train.seed)
    placement = choose_placement(cfg.model.device, cfg.model.precision)
    rows, mining_report = training_rows(cfg, data, placement, reporter, "tuples",
                                        add_teacher_scores if cfg.loss == "distill" else None)
    recipe.seed_everything(cfg.train.seed)  # the new projection starts the same on every run
    model = load_multivector(cfg.model.name, placement, new_head=True, dim=cfg.model.dim,
                             query_length=cfg.model.query_length, document_length=cfg.model.document_length)
    recipe.set_dropout(model, cfg.model.dropout)
    loss = build_loss(model, cfg.loss, cfg.loss_args)
    with reporter.phase(f"First stage ({cfg.eval.first_stage}) for the eval queries"):
        candidates = Candidates.build(data.eval, cfg.eval, placement)
    run_dir = recipe.open_run(cfg, resume, overwrite)

    with run_logging(RunDir(run_dir).log):
        training, scoring = settle(placement, model, "train"), settle(placement, model, "encode")
        reporter.note(f"device {placement.device}; training {training.precision} ({training.reason}); encoding "
                      f"{scoring.precision} ({scoring.reason})")
        for line in mining_report:
            reporter.note(f"hard negatives: {line}")
        reporter.note(f"data: {len(rows)} training tuples ({cfg.loss}); eval {data.eval.name}: "
                      f"{len(data.eval.queries)} queries, {cfg.eval.first_stage} top {cfg.eval.rerank_k} by MaxSim")
        before = recipe.evaluate_before(run_dir, resume, reporter, cfg.eval.first_stage, data.eval.name,
                                        lambda: candidates.first_stage_metrics(cfg.eval),
                                        label="Evaluating the first stage alone")
        kwargs = training_kwargs(cfg.train, run_dir, training, cfg.eval.primary_metric, show_progress=False)
        args = build_training_args(MultiVectorEncoderTrainingArguments, kwargs)
        trainer = MultiVectorEncoderTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                            loss=loss, evaluator=rerank_evaluator(candidates, cfg.eval, placement),
                                            callbacks=recipe.callbacks(run_dir, cfg, reporter))
        train_seconds = recipe.train(trainer, run_dir, resume, reporter)
        if not is_main_process():
            return TrainResult(run_dir, None, train_seconds, len(rows))

        def evaluate_after() -> dict[str, float]:
            with reporter.phase("Evaluating the tuned late-interaction model"):
                return candidates.reranked_metrics(model, cfg.eval, placement)

        final, best, after = recipe.conclude(trainer, run_dir, model.save_pretrained, cfg.eval.primary_metric,
                                             evaluate_after)
        details = {"model": f"{cfg.model.name} + a {cfg.model.dim}-wide token projection", "data": str(cfg.data.train),
                   "eval split": data.eval.name, "before": f"{cfg.eval.first_stage} alone",
                   "after": f"{cfg.eval.first_stage} + MaxSim over the top {cfg.eval.rerank_k}",
                   "train rows": str(len(rows)), "loss": f"{cfg.loss} ({CITATIONS[cfg.loss]})",
                   **({"teacher": cfg.teacher} if cfg.teacher else {}),
                   "device": f"{training.device} / {training.precision}", "train time": f"{train_seconds:.1f} s"}
        comparison = recipe.finish(run_dir, cfg, before, after, final, data.eval.name, details,
                                   f"ragtune train multivector: {run_dir.name}", best)
        return TrainResult(run_dir, comparison, train_seconds, len(rows))
