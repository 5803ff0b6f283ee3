"""Cross-encoder losses by short name: the dataset layout each trains on, and its citation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ragtune.config.rerank import RERANK_LOSSES as LOSS_NAMES
from ragtune.errors import ConfigError


@dataclass(frozen=True)
class RerankLossSpec:
    build: Callable[..., Any]  # (model, **loss_args) -> loss module
    layout: str  # "pointwise" (query, document, label) | "tuples" (query, positive, negatives...) | "listwise"
    citation: str


def _ce_loss(name: str, **defaults) -> Callable[..., Any]:
    def build(model, **kwargs):
        from sentence_transformers.cross_encoder import losses

        return getattr(losses, name)(model, **{**defaults, **kwargs})

    return build


def _lambda_loss(model, **kwargs):
    from sentence_transformers.cross_encoder import losses

    # NDCG weighting (NDCGLoss2++), the scheme recommended for LambdaLoss.
    kwargs.setdefault("weighting_scheme", losses.NDCGLoss2PPScheme())
    return losses.LambdaLoss(model, **kwargs)


RERANK_LOSSES: dict[str, RerankLossSpec] = {
    "bce": RerankLossSpec(_ce_loss("BinaryCrossEntropyLoss"), "pointwise",
                          "pointwise binary cross-entropy, as in the MS MARCO cross-encoders (Nogueira and Cho 2019)"),
    "mnrl": RerankLossSpec(_ce_loss("MultipleNegativesRankingLoss"), "tuples",
                           "Henderson et al. 2017, with the positive among its negatives"),
    "listnet": RerankLossSpec(_ce_loss("ListNetLoss"), "listwise", "Cao et al. 2007, Learning to Rank: ListNet"),
    "lambdaloss": RerankLossSpec(_lambda_loss, "listwise",
                                 "Wang et al. 2018, The LambdaLoss Framework for Ranking Metric Optimization"),
    "margin_mse": RerankLossSpec(_ce_loss("MarginMSELoss"), "tuples",
                                 "Hofstätter et al. 2020, Improving Efficient Neural Ranking Models with "
                                 "Cross-Architecture Knowledge Distillation"),
}


if tuple(RERANK_LOSSES) != LOSS_NAMES:  # pragma: no cover - a developer's slip, caught by any test
    raise ImportError(f"train/rerank_losses.py builds {tuple(RERANK_LOSSES)} but config/rerank.py accepts {LOSS_NAMES}")


def build_rerank_loss(model, loss: str, loss_args: dict[str, Any]):
    try:
        return RERANK_LOSSES[loss].build(model, **loss_args)
    except TypeError as exc:
        raise ConfigError(f"loss_args for '{loss}': {exc}; see the loss's documentation for its arguments") from None
