"""Reranker fine-tuning recipe: config -> data (+ mined negatives) -> model -> before -> train -> after -> report.

Built on sentence-transformers' CrossEncoderTrainer. 'Before' is the first stage alone (eval.first_stage);
'after' is that first stage plus the tuned cross-encoder over its top eval.rerank_k, on the same queries.
"""

from __future__ import annotations

import logging

from ragtune.config import RerankConfig
from ragtune.data.embed import load_embed_data
from ragtune.data.rerank import add_teacher_margins, groups_from_examples, rerank_rows
from ragtune.eval.metrics import mean_scores
from ragtune.eval.report import ScoreBook
from ragtune.eval.rerank import Candidates, rerank_evaluator
from ragtune.models.device import choose_placement, settle
from ragtune.models.load import load_cross_encoder
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir
from ragtune.train import recipe
from ragtune.train.freezing import keep_first_layers
from ragtune.train.recipe import TrainResult
from ragtune.train.rerank_losses import RERANK_LOSSES, build_rerank_loss
from ragtune.train.run_log import run_logging
from ragtune.train.trainer_args import build_training_args, training_kwargs
from ragtune.utils import is_main_process

log = logging.getLogger(__name__)


def training_rows(cfg, data, placement, reporter: Reporter, layout: str, teacher_labels=None):
    """Mine negatives for pairs when asked, lay the groups out as the loss reads them (`layout`), and label them
    with `cfg.teacher` (a cross-encoder) through `teacher_labels(rows, teacher)` when the loss distils one; also
    the mining report. Shared by the reranker and late-interaction recipes."""
    examples, report = data.train, []
    if examples.format == "pairs" and cfg.data.hard_negatives:
        from ragtune.retrieval.mine import mine_for_training, mining_tools

        with reporter.phase("Mining hard negatives"):
            tools = mining_tools(cfg.data.hard_negatives, data.eval.corpus, cfg.model.name, placement)
            examples, mining = mine_for_training(examples, data.eval.corpus, cfg.data.hard_negatives, *tools)
        report = mining.lines()
    rows = rerank_rows(groups_from_examples(examples), layout)
    if teacher_labels is not None:
        from ragtune.retrieval.rerank import Reranker

        with reporter.phase("Scoring the training tuples with the teacher"):
            rows = teacher_labels(rows, Reranker(load_cross_encoder(cfg.teacher, placement), placement))
    return rows, report


def train_second_stage(cfg, data, model, loss, rows: list[dict], mining_report: list[str], placement, reporter: Reporter,
                       resume: bool, overwrite: bool, trainer_class, arguments_class, *, workload: str, scorer: str,
                       model_line: str, rows_line: str, loss_line: str) -> TrainResult:
    """The part of a second-stage recipe (a cross-encoder, or MaxSim) after the data and the model are ready:
    first stage alone (before), train with best-checkpoint selection on the reranked eval queries, the tuned
    `scorer` over the first stage's top eval.rerank_k (after), and the report."""
    import datasets

    task = cfg.task
    with reporter.phase(f"First stage ({cfg.eval.first_stage}) for the eval queries"):
        candidates = Candidates.build(data.eval, cfg.eval, placement)
    run_dir = recipe.open_run(cfg, resume, overwrite)

    with run_logging(RunDir(run_dir).log):
        training, scoring = settle(placement, model, "train"), settle(placement, model, workload)
        reporter.note(f"device {placement.device}; training {training.precision} ({training.reason}); {workload} "
                      f"{scoring.precision} ({scoring.reason})")
        for line in mining_report:
            reporter.note(f"hard negatives: {line}")
        reporter.note(f"data: {len(rows)} {rows_line}; eval {data.eval.name}: {len(data.eval.queries)} queries, "
                      f"{cfg.eval.first_stage} top {cfg.eval.rerank_k} rescored by {scorer}")
        book = ScoreBook()

        def evaluate_first_stage() -> dict[str, float]:
            book.before = candidates.first_stage_scores(cfg.eval)
            return mean_scores(book.before)

        before = recipe.evaluate_before(run_dir, resume, reporter, cfg.eval.first_stage, data.eval.name,
                                        evaluate_first_stage, book, label="Evaluating the first stage alone")
        kwargs = training_kwargs(cfg.train, run_dir, training, cfg.eval.primary_metric, show_progress=False)
        args = build_training_args(arguments_class, kwargs)
        trainer = trainer_class(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), loss=loss,
                                evaluator=rerank_evaluator(candidates, cfg.eval, placement, book),
                                callbacks=recipe.callbacks(run_dir, cfg, reporter))
        train_seconds = recipe.train(trainer, run_dir, resume, reporter)
        if not is_main_process():
            return TrainResult(run_dir, None, train_seconds, len(rows))

        def evaluate_after() -> dict[str, float]:
            with reporter.phase(f"Evaluating the tuned {task} model"):
                scores = candidates.reranked_scores(model, cfg.eval, placement)
            book.keep(None, scores)
            return mean_scores(scores)

        final, best, after = recipe.conclude(trainer, run_dir, model.save_pretrained, cfg.eval.primary_metric,
                                             evaluate_after, book)
        details = {"model": model_line, "data": str(cfg.data.train), "eval split": data.eval.name,
                   "before": f"{cfg.eval.first_stage} alone",
                   "after": f"{cfg.eval.first_stage} + {scorer.removeprefix('the ')} over the top {cfg.eval.rerank_k}",
                   "train rows": str(len(rows)), "loss": loss_line,
                   **({"teacher": cfg.teacher} if cfg.teacher else {}),
                   "device": f"{training.device} / {training.precision}", "train time": f"{train_seconds:.1f} s"}
        comparison = recipe.finish(run_dir, cfg, before, after, final, data.eval.name, details,
                                   f"ragtune train {task}: {run_dir.name}", best, book=book, model=model)
        return TrainResult(run_dir, comparison, train_seconds, len(rows))


def train_rerank(cfg: RerankConfig, resume: bool = False, overwrite: bool = False,
                 reporter: Reporter | None = None) -> TrainResult:
    """Fine-tune a cross-encoder reranker and compare first stage vs first stage + reranker on held-out queries."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    reporter = reporter or Reporter()
    data = load_embed_data(cfg.data, cfg.train.seed)
    if cfg.teacher:
        from ragtune.models.resolve import resolve_model

        resolve_model(cfg.teacher)
    placement = choose_placement(cfg.model.device, cfg.model.precision)
    if cfg.loss == "margin_mse" and not cfg.teacher:
        from ragtune.errors import ConfigError

        raise ConfigError("loss=margin_mse distils a stronger scorer: set teacher=MODEL (a cross-encoder)")
    rows, mining_report = training_rows(cfg, data, placement, reporter, RERANK_LOSSES[cfg.loss].layout,
                                        add_teacher_margins if cfg.loss == "margin_mse" else None)
    recipe.seed_everything(cfg.train.seed)  # the new scoring head starts the same on every run
    model = load_cross_encoder(cfg.model.name, placement, new_head=True)
    keep_first_layers(model.model, cfg.model.num_layers)
    recipe.set_dropout(model, cfg.model.dropout)
    if cfg.model.max_seq_length:
        model.max_seq_length = cfg.model.max_seq_length
    loss = build_rerank_loss(model, cfg.loss, cfg.loss_args)
    layers = f" (its first {cfg.model.num_layers} layers)" if cfg.model.num_layers else ""
    return train_second_stage(cfg, data, model, loss, rows, mining_report, placement, reporter, resume, overwrite,
                              CrossEncoderTrainer, CrossEncoderTrainingArguments, workload="rerank",
                              scorer="the reranker", model_line=cfg.model.name + layers,
                              rows_line=f"{RERANK_LOSSES[cfg.loss].layout} training rows", loss_line=cfg.loss)
