"""The late-interaction (ColBERT-style, MaxSim) training config."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from ragtune.choices import one_of
from ragtune.config.rerank import RerankDataSection, RerankEvalSection
from ragtune.config.schema import ModelSection, OutputSection, TaskConfig, default_output


class MultiVectorModelSection(ModelSection):
    dim: int = Field(128, gt=0, description="width of each token vector (the new projection's); ColBERT uses 128")
    query_length: int | None = Field(32, gt=0, description="query tokens kept (and scored)")
    document_length: int | None = Field(256, gt=0, description="document tokens kept; the index stores this many "
                                        "vectors per chunk at most")


class MultiVectorEvalSection(RerankEvalSection):
    rerank_k: int = Field(50, gt=0, description="first-stage candidates MaxSim reorders")


# The names the config accepts; train/multivector.py builds each.
MULTIVECTOR_LOSSES = ("mnrl", "distill")


class MultiVectorConfig(TaskConfig):
    """Train a late-interaction model: every token gets a vector, and a query scores a document by MaxSim."""

    task: ClassVar[str] = "multivector"
    model: MultiVectorModelSection = Field(default_factory=MultiVectorModelSection)
    data: RerankDataSection = Field(default_factory=RerankDataSection)
    eval: MultiVectorEvalSection = Field(default_factory=MultiVectorEvalSection)
    output: OutputSection = Field(default_factory=default_output("multivector"))
    loss: str = Field("mnrl", description="mnrl (in-batch and mined negatives) or distill (KL divergence to a "
                      "cross-encoder teacher's scores of each query's positive and mined negatives)")
    loss_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the loss")
    teacher: str | None = Field(None, description="cross-encoder whose scores loss=distill learns")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        return one_of("loss", name, MULTIVECTOR_LOSSES)

    @model_validator(mode="after")
    def _teacher_for_distill(self) -> MultiVectorConfig:
        if self.loss == "distill" and not self.teacher:
            raise ValueError("loss=distill learns a teacher's scores: set teacher=MODEL (a cross-encoder, say a "
                             "`ragtune train rerank` run)")
        return self
