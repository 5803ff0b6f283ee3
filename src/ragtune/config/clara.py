"""`ragtune train clara`: CLaRa's three stages (compress, instruct, e2e) over one frozen LM with LoRA adapters."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ragtune.config.generate import GenerationEvalSection, GenerationModelSection, GenerationTrainSection, LoraSection
from ragtune.config.schema import DataFilesSection, OutputSection, TaskConfig, default_output

STAGES = ("compress", "instruct", "e2e")


class ClaraModelSection(GenerationModelSection):
    name: str = Field("HuggingFaceTB/SmolLM2-135M-Instruct", description="the frozen base LM (stage compress); "
                      "later stages take it from init_from")


class ClaraDataSection(DataFilesSection):
    """JSONL records: {"documents": [...] (or "document": "..."), "question": ..., "answer": ...}; stage e2e
    reads {"candidates": [...], "question": ..., "answer": ..., "positives": [indices, optional]}."""

    max_eval_samples: int | None = Field(64, gt=0, description="evaluate on at most N held-out records")


class ClaraTrainSection(GenerationTrainSection):
    learning_rate: float = Field(1.0e-4, gt=0, description="peak learning rate (the paper: 1e-4 for stages 1 and "
                                 "2, 5e-6 for stage 3)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the adapters (never on the "
                                "embedding rows)")


class ClaraEvalSection(GenerationEvalSection):
    metrics: list[str] = Field(default_factory=lambda: ["perplexity", "exact_match", "f1"],
                               description="perplexity of the reference answers, and text metrics of greedy answers")
    max_new_tokens: int = Field(32, gt=0, description="greedy generation length for the text metrics")
    generation_samples: int = Field(16, ge=0, description="held-out records answered for the text metrics")


class ClaraLoraSection(LoraSection):
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")


class ClaraConfig(TaskConfig):
    """CLaRa: compress documents into memory-token vectors and answer from them (issue 20)."""

    task: ClassVar[str] = "clara"
    model: ClaraModelSection = Field(default_factory=ClaraModelSection)
    data: ClaraDataSection = Field(default_factory=ClaraDataSection)
    train: ClaraTrainSection = Field(default_factory=ClaraTrainSection)
    eval: ClaraEvalSection = Field(default_factory=ClaraEvalSection)
    output: OutputSection = Field(default_factory=default_output("clara"))
    lora: ClaraLoraSection = Field(default_factory=ClaraLoraSection)
    stage: Literal["compress", "instruct", "e2e"] = Field("compress", description="compress (stage 1), instruct "
                                                           "(stage 2) or e2e (stage 3)")
    init_from: str | None = Field(None, description="the previous stage's run directory (instruct and e2e)")
    compress_rate: int = Field(32, gt=0, description="document tokens per memory vector")
    doc_max_length: int = Field(256, gt=0, description="document tokens read (a multiple of compress_rate)")
    top_k: int = Field(3, gt=0, description="e2e: candidates the differentiable top-k hands the generator")
    candidates: int = Field(10, gt=0, description="e2e: candidates scored per question (the first N of a record)")
    mse_weight: float = Field(0.1, ge=0, description="weight of the memory/document mean MSE (stages 1 and 2)")
    temperature: float = Field(0.02, gt=0, description="e2e: softmax temperature of the top-k's gradient")

    @model_validator(mode="after")
    def _stage_and_shape(self) -> ClaraConfig:
        if self.stage != "compress" and not self.init_from:
            previous = STAGES[STAGES.index(self.stage) - 1]
            raise ValueError(f"stage {self.stage} starts from the {previous} stage's run: set init_from: RUN_DIR")
        if self.stage == "compress" and self.init_from:
            raise ValueError("stage compress starts from the base model (model.name); init_from is for instruct "
                             "and e2e")
        if self.doc_max_length % self.compress_rate:
            raise ValueError(f"compress_rate {self.compress_rate} does not divide doc_max_length "
                             f"({self.doc_max_length}); pick a divisor")
        if self.top_k > self.candidates:
            raise ValueError(f"top_k ({self.top_k}) is more than the candidates scored ({self.candidates})")
        return self
