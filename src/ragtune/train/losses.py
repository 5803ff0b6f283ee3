"""Embedding losses by short name, each knowing the data formats it trains on and its citation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ragtune.config.schema import EMBED_LOSSES
from ragtune.errors import ConfigError


@dataclass(frozen=True)
class LossSpec:
    build: Callable[..., Any]  # (model, **loss_args) -> loss module
    formats: tuple[str, ...]  # data formats the loss accepts
    label_kind: str  # "" | "binary" | "score": what the score column must hold
    citation: str
    max_negatives: int | None = None  # negatives per row the loss takes (None: any number)


def _st_loss(name: str) -> Callable[..., Any]:
    def build(model, **kwargs):
        from sentence_transformers.sentence_transformer import losses

        return getattr(losses, name)(model, **kwargs)

    return build


def _guided(name: str) -> Callable[..., Any]:
    """A GISTEmbed loss guided by a frozen copy of the model as it starts (the base model): an in-batch or mined
    negative that the base model scores above the pair's positive is taken for an unlabelled positive and left out
    of the softmax. Without anchor-anchor and positive-positive terms and at MNRL's temperature (scale 20), it is
    MNRL with false-negative protection."""

    def build(model, **kwargs):
        import copy

        from sentence_transformers.sentence_transformer import losses

        guide = copy.deepcopy(model).eval()
        for parameter in guide.parameters():
            parameter.requires_grad_(False)
        settings = {"temperature": 0.05, "contrast_anchors": False, "contrast_positives": False, **kwargs}
        return getattr(losses, name)(model, guide, **settings)

    return build


LOSSES: dict[str, LossSpec] = {
    "mnrl": LossSpec(_st_loss("MultipleNegativesRankingLoss"), ("pairs", "triplets"), "",
                     "Henderson et al. 2017, Efficient Natural Language Response Suggestion"),
    "cached_mnrl": LossSpec(_st_loss("CachedMultipleNegativesRankingLoss"), ("pairs", "triplets"), "",
                            "Gao et al. 2021, Scaling Deep Contrastive Learning Batch Size (GradCache)"),
    "gist": LossSpec(_guided("GISTEmbedLoss"), ("pairs", "triplets"), "",
                     "Solatorio 2024, GISTEmbed: Guided In-sample Selection of Training Negatives", max_negatives=1),
    "cached_gist": LossSpec(_guided("CachedGISTEmbedLoss"), ("pairs", "triplets"), "",
                            "Solatorio 2024, GISTEmbed (with GradCache)", max_negatives=1),
    "contrastive": LossSpec(_st_loss("ContrastiveLoss"), ("scored_pairs",), "binary",
                            "Hadsell et al. 2006, Dimensionality Reduction by Learning an Invariant Mapping"),
    "online_contrastive": LossSpec(_st_loss("OnlineContrastiveLoss"), ("scored_pairs",), "binary",
                                   "Hadsell et al. 2006 (hard-pair variant from sentence-transformers)"),
    "cosine": LossSpec(_st_loss("CosineSimilarityLoss"), ("scored_pairs",), "score",
                       "Reimers and Gurevych 2019, Sentence-BERT"),
    "cosent": LossSpec(_st_loss("CoSENTLoss"), ("scored_pairs",), "score", "Su 2022, CoSENT"),
}


if tuple(LOSSES) != EMBED_LOSSES:  # pragma: no cover - a developer's slip, caught by any test
    raise ImportError(f"train/losses.py builds {tuple(LOSSES)} but config/schema.py accepts {EMBED_LOSSES}")


def check_loss_fits(loss: str, data_format: str, scores: list[float] | None = None, negatives: int = 0) -> None:
    """Fail before training when the loss cannot train on this data format (or this many negatives per row)."""
    spec = LOSSES[loss]
    if spec.max_negatives is not None and negatives > spec.max_negatives:
        raise ConfigError(f"loss '{loss}' takes at most {spec.max_negatives} negative per row but the data has "
                          f"{negatives}; use loss=mnrl, or keep one negative (data.hard_negatives.num_negatives=1)")
    if data_format not in spec.formats:
        fits = [name for name, s in LOSSES.items() if data_format in s.formats]
        raise ConfigError(f"loss '{loss}' needs {' or '.join(spec.formats)} data but the data is {data_format}; "
                          f"use loss={fits[0]} (fits {data_format}: {fits}) or change the data")
    if spec.label_kind == "binary" and scores and any(s not in (0.0, 1.0) for s in scores):
        raise ConfigError(f"loss '{loss}' needs 0/1 labels in the score column but the data has graded scores; "
                          "use loss=cosent or loss=cosine")


def build_loss(model, loss: str, loss_args: dict[str, Any], matryoshka_dims: list[int]):
    """The configured loss module, wrapped in MatryoshkaLoss when dimensions are given."""
    try:
        module = LOSSES[loss].build(model, **loss_args)
    except TypeError as exc:
        raise ConfigError(f"loss_args for '{loss}': {exc}; see the loss's documentation for its arguments") from None
    if matryoshka_dims:
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

        dim = model.get_embedding_dimension()
        if dim and max(matryoshka_dims) > dim:
            raise ConfigError(f"matryoshka_dims {matryoshka_dims} exceed the model's dimension {dim}")
        module = MatryoshkaLoss(model, module, matryoshka_dims=matryoshka_dims)
    return module
