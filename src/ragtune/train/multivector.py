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
from ragtune.models.device import choose_placement
from ragtune.models.load import load_multivector
from ragtune.progress import Reporter
from ragtune.train import recipe
from ragtune.train.recipe import TrainResult
from ragtune.train.rerank import train_second_stage, training_rows

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
    return train_second_stage(cfg, data, model, loss, rows, mining_report, placement, reporter, resume, overwrite,
                              MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments, workload="encode",
                              scorer="MaxSim", model_line=f"{cfg.model.name} + a {cfg.model.dim}-wide token projection",
                              rows_line=f"training tuples ({cfg.loss})", loss_line=f"{cfg.loss} ({CITATIONS[cfg.loss]})")
