"""The reranker (cross-encoder) training config."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from ragtune.choices import one_of
from ragtune.config.retrieval import FIRST_STAGE_HELP, RERANK_K_HELP, HardNegativesSection
from ragtune.config.schema import (
    EvalSection,
    ModelSection,
    OutputSection,
    RetrievalDataSection,
    TaskConfig,
    default_output,
)


class RerankModelSection(ModelSection):
    num_layers: int | None = Field(
        None, gt=0, description="keep only the first N transformer layers of the start model: a shallower, faster "
        "reranker (about N/depth of the compute per pair); the saved model has N layers. Default: all of them")


class RerankEvalSection(EvalSection):
    first_stage: str = Field("bm25", description=f"{FIRST_STAGE_HELP}; 'before' is this stage alone")
    rerank_k: int = Field(100, gt=0, description=RERANK_K_HELP)


class RerankDataSection(RetrievalDataSection):
    hard_negatives: HardNegativesSection | None = Field(
        default_factory=HardNegativesSection,
        description="negatives mined for pairs before training (default: BM25, 3 per pair); null turns it off")


# The names the config accepts; train/rerank_losses.py builds each (and checks that it builds exactly these).
RERANK_LOSSES = ("bce", "mnrl", "listnet", "lambdaloss", "margin_mse")


class RerankConfig(TaskConfig):
    """Fine-tune a sentence-transformers CrossEncoder as a reranker."""

    task: ClassVar[str] = "rerank"
    model: RerankModelSection = Field(default_factory=RerankModelSection)
    data: RerankDataSection = Field(default_factory=RerankDataSection)
    eval: RerankEvalSection = Field(default_factory=RerankEvalSection)
    output: OutputSection = Field(default_factory=default_output("rerank"))
    loss: str = Field("bce", description="loss short name: bce, mnrl, listnet, lambdaloss, margin_mse")
    loss_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the loss")
    teacher: str | None = Field(None, description="cross-encoder whose score margins margin_mse distils")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        return one_of("loss", name, RERANK_LOSSES)
