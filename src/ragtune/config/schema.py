"""Typed config schemas: one pydantic model per task, nested by concern.

Field names follow HF `TrainingArguments` where one exists, so users' habits carry over.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ragtune.choices import one_of
from ragtune.config.base import Device, Precision, PromptsSection, Section, device_field, precision_field
from ragtune.config.retrieval import HardNegativesSection

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
IR_METRICS = ("ndcg", "mrr", "map", "recall", "precision", "accuracy")
# The names the config accepts; train/losses.py builds each (and checks that it builds exactly these).
EMBED_LOSSES = ("mnrl", "cached_mnrl", "gist", "cached_gist", "contrastive", "online_contrastive", "cosine", "cosent")
COLUMN_ROLES = ("anchor", "positive", "negative", "negatives", "sentence1", "sentence2", "score")


def unknown_role(columns: dict[str, str]) -> str | None:
    """Describe the first mapped role that is not a role, with a suggestion; None when all are known."""
    from ragtune.choices import unknown

    return next((unknown("role", role, COLUMN_ROLES, f"roles are {', '.join(COLUMN_ROLES)}") for role in columns
                 if role not in COLUMN_ROLES), None)


class ModelSection(Section):
    name: str = Field(DEFAULT_EMBEDDER, description="HF hub id or local path of the model to start from")
    max_seq_length: int | None = Field(
        None, gt=0, description="truncate inputs to this many tokens; default: the model's own limit"
    )
    device: Device = device_field()
    precision: Precision = precision_field()
    dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout while training (every dropout layer); default: the model's own. "
        "0 trains MiniLM 1.6x faster on CPU, where dropout's random masks cost as much as the matmuls"
    )


class DataFilesSection(Section):
    """What every task's data section holds."""

    train: str | None = Field(None, description="a file, a folder of files, or a BEIR directory")
    eval: str | None = Field(None, description="held-out file; for BEIR the split named by data.eval_split is used")
    eval_fraction: float = Field(
        0.1, gt=0, lt=1, description="held-out fraction when there is no eval file (or BEIR split)"
    )
    max_train_samples: int | None = Field(None, gt=0, description="use only the first N training rows")


def default_hard_negatives() -> HardNegativesSection:
    """Mined by default for (query, document) pairs: one negative per pair from the base model's top 50, known
    positives excluded, and anything scoring above 95% of the positive's score dropped as a likely unlabelled
    positive (positive-aware mining, as in NV-Retriever and sentence-transformers' `relative_margin`); a pair with no
    candidate left gets a random document instead, so no pair is lost."""
    return HardNegativesSection(first_stage="dense:base", num_negatives=1, range_max=50, relative_margin=0.05,
                                short="random")


class DataSection(DataFilesSection):
    """(query, document) data for embedders and rerankers: files of pairs/triplets, or a BEIR directory."""

    format: Literal["auto", "pairs", "triplets", "scored_pairs", "beir"] = Field(
        "auto", description="data format; auto detects it from the fields"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="map a role (anchor, positive, negative, negatives, sentence1, sentence2, score) to your column",
    )
    unknown_ids: Literal["error", "skip"] = Field(
        "error", description="qrels naming unknown query/document ids: error, or skip them with a count")
    eval_split: str = Field("test", description="BEIR qrels split to evaluate on (test or dev)")
    train_split: str = Field("train", description="BEIR qrels split to train on")
    max_eval_queries: int | None = Field(None, gt=0, description="evaluate on a seeded sample of N queries")

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, columns: dict[str, str]) -> dict[str, str]:
        problem = unknown_role(columns)
        if problem:
            raise ValueError(problem)
        return columns


class RetrievalDataSection(DataSection):
    """An embedder's training data: DataSection plus hard-negative mining."""

    hard_negatives: HardNegativesSection | None = Field(
        default_factory=default_hard_negatives,
        description="mine hard negatives for (query, document) pairs before training; default: one per pair from "
        "the base model's top 50, none above 95% of the positive's score; null turns mining off")


class TrainSection(Section):
    num_train_epochs: float = Field(1.0, gt=0, description="passes over the training data")
    max_steps: int = Field(-1, description="stop after this many optimizer steps; -1 uses num_train_epochs")
    per_device_train_batch_size: int = Field(32, gt=0, description="batch size; in-batch negatives grow with it")
    learning_rate: float = Field(2.0e-5, gt=0, description="peak learning rate")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of steps spent warming up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    lr_scheduler_type: str = Field("linear", description="HF scheduler name: linear, cosine, constant, ...")
    gradient_accumulation_steps: int = Field(1, gt=0, description="steps to accumulate before an update")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory")
    eval_steps: int = Field(100, gt=0, description="evaluate every N steps (and at the end)")
    save_steps: int = Field(100, gt=0, description="checkpoint every N steps")
    save_total_limit: int = Field(2, gt=0, description="keep at most N checkpoints (the best is always kept)")
    logging_steps: int = Field(10, gt=0, description="log the loss every N steps")
    seed: int = Field(42, description="seed for data order, splits and initialisation")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="stop after N evaluations without improvement; off by default"
    )
    report_to: list[str] = Field(
        default_factory=list, description="experiment trackers: tensorboard, wandb, mlflow, trackio (each also gets "
        "the before/after evaluations, the verdict and the config as the run's summary), the Trainer's other "
        "integrations, all, or none")
    dataloader_num_workers: int = Field(0, ge=0, description="dataloader worker processes")
    extra: dict[str, Any] = Field(default_factory=dict, description="any other TrainingArguments, passed through")

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, names: list[str]) -> list[str]:
        from ragtune.train.trackers import check_report_to

        return check_report_to(names)

    @model_validator(mode="after")
    def _save_on_eval(self) -> TrainSection:
        if self.save_steps % self.eval_steps:
            raise ValueError(f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                             "so that every checkpoint has a score for best-checkpoint selection")
        return self


class EmbedTrainSection(TrainSection):
    learning_rate: float = Field(
        5.0e-5, gt=0, description="peak learning rate; 5e-5 beat 2e-5 with the default loss and mining on both "
        "leave-one-out domains (PubMedQA, SciFact; benchmarks/RESULTS.md)")
    batch_sampler: Literal["no_duplicates", "batch_sampler"] = Field(
        "no_duplicates", description="no_duplicates keeps a text out of its own batch's negatives"
    )
    length_buckets: bool = Field(
        True, description="run each batch in length-sorted chunks: same gradients, less padding"
    )
    freeze_layers: int = Field(
        0, ge=0, description="keep the token embeddings and the first N transformer layers fixed; the backward "
        "pass stops above them (faster steps, fewer weights to move on small data)"
    )
    base_as_candidate: bool = Field(
        True, description="count the base model (step 0) as a checkpoint candidate: when no tuned checkpoint beats "
        "it on the held-out split, final/ is the base model and the run exits 1"
    )
    min_steps: int | None = Field(
        40, ge=1, description="unless num_train_epochs or max_steps is set: train the fewest whole epochs that make "
        "at least this many optimizer steps (SciFact's 26-step epoch gained +0.025 NDCG@10 from a second one, "
        "PubMedQA's 47-step epoch nothing; benchmarks/RESULTS.md); null: one epoch"
    )
    max_auto_epochs: int = Field(10, ge=1, description="the most epochs min_steps may ask for")


class EvalSection(Section):
    primary_metric: str = Field("ndcg@10", description="metric that picks the best checkpoint and the verdict")
    ks: list[int] = Field(default_factory=lambda: [1, 3, 5, 10, 100], description="cut-offs for the IR metrics")
    metrics: list[Literal[IR_METRICS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(IR_METRICS), description="IR metrics to compute at every k"
    )
    batch_size: int | None = Field(None, gt=0, description="encoding batch size; default 16 on CPU, 128 on GPUs")

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k <= 0 for k in ks):
            raise ValueError("give at least one k, each a positive integer")
        return sorted(set(ks))

    @model_validator(mode="after")
    def _primary_is_computed(self) -> EvalSection:
        match = re.fullmatch(r"([a-z_]+)@(\d+)", self.primary_metric)
        if not match or match.group(1) not in self.metrics or int(match.group(2)) not in self.ks:
            raise ValueError(
                f"primary_metric '{self.primary_metric}' is not computed; use METRIC@K with METRIC in "
                f"{self.metrics} and K in {self.ks}"
            )
        return self


class OutputSection(Section):
    dir: str = Field(description="the run directory")


def default_output(task: str):
    """The task's output section, with the run directory the task table names."""
    from ragtune.tasks import TASKS

    return lambda: OutputSection(dir=TASKS[task].output)


def other_task(named: object, task: str) -> str:
    return (f"task: this is a {named} config, not a {task} one; use it with `ragtune train {named}`, or drop the "
            "task key")


class TaskConfig(Section):
    """Shared by every task: model, data, train, eval, output. A top-level `task:` (a run's config.yaml records
    it) must name this task."""

    task: ClassVar[str] = ""
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataFilesSection = Field(default_factory=DataFilesSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    output: OutputSection

    @model_validator(mode="before")
    @classmethod
    def _own_task(cls, data):
        if isinstance(data, dict) and "task" in data:
            if data["task"] != cls.task:
                raise ValueError(other_task(data["task"], cls.task))
            data = {k: v for k, v in data.items() if k != "task"}
        return data


class EmbedConfig(TaskConfig):
    """Fine-tune a sentence-transformers bi-encoder."""

    task: ClassVar[str] = "embed"
    output: OutputSection = Field(default_factory=default_output("embed"))
    data: RetrievalDataSection = Field(default_factory=RetrievalDataSection)
    train: EmbedTrainSection = Field(default_factory=EmbedTrainSection)
    loss: str = Field("gist", description="loss short name: gist (MNRL whose negatives the base model checks for "
                      "unlabelled positives), cached_gist, mnrl, cached_mnrl, contrastive, online_contrastive, "
                      "cosine, cosent")
    loss_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the loss")
    matryoshka_dims: list[int] = Field(
        default_factory=list, description="wrap the loss in MatryoshkaLoss over these dimensions, e.g. [384, 128, 64]"
    )
    prompts: PromptsSection = Field(default_factory=PromptsSection)

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        return one_of("loss", name, EMBED_LOSSES)

    @field_validator("matryoshka_dims")
    @classmethod
    def _positive_dims(cls, dims: list[int]) -> list[int]:
        if any(d <= 0 for d in dims):
            raise ValueError("every Matryoshka dimension must be a positive integer")
        return sorted(set(dims), reverse=True)

