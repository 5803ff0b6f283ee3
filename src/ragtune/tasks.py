"""Every task ragtune knows, in one table: its name, config class, recipe, default output and data summary.

The CLI (`train`, `config show`), `doctor` and `eval generation` read this table; nothing else lists the tasks. The
config classes, recipes and summaries are named as "module:attribute" and imported when asked for, so that this
module imports nothing and a command pays only for the task it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


@dataclass(frozen=True)
class Task:
    name: str
    config: str  # "module:Class", the config schema
    help: str
    recipe: str | None = None  # "module:function" (cfg, resume, overwrite, reporter) -> TrainResult
    output: str | None = None  # the default run directory
    summary: str | None = None  # "module:function" (cfg) -> one line on the data the config names (doctor)
    generation: bool = False  # `ragtune eval generation` evaluates its runs

    @property
    def trains(self) -> bool:
        return self.recipe is not None

    @property
    def heading(self) -> str:
        return f"ragtune train {self.name}" if self.trains else f"{self.name} settings"

    def config_class(self) -> type:
        return _load(self.config)

    def run(self, cfg, **kwargs):
        """Train: the recipe with `resume`, `overwrite` and `reporter`."""
        return _load(self.recipe)(cfg, **kwargs)

    def describe_data(self, cfg) -> str | None:
        """Load the data `cfg` names, as the recipe would, and say what it holds; None for settings."""
        return _load(self.summary)(cfg) if self.summary else None


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("embed", "ragtune.config.schema:EmbedConfig", "Fine-tune a sentence-transformers embedding model.",
         "ragtune.train.embed:train_embed", "runs/embed", "ragtune.data.embed:describe"),
    Task("rerank", "ragtune.config.rerank:RerankConfig", "Fine-tune a cross-encoder reranker; before = the first "
         "stage alone, after = first stage + reranker.", "ragtune.train.rerank:train_rerank", "runs/rerank",
         "ragtune.data.embed:describe"),
    Task("multivector", "ragtune.config.multivector:MultiVectorConfig", "Train a late-interaction (ColBERT-style) "
         "model scored by MaxSim; before = the first stage alone, after = first stage + MaxSim over its top k.",
         "ragtune.train.multivector:train_multivector", "runs/multivector", "ragtune.data.embed:describe"),
    Task("llm", "ragtune.config.generate:LLMConfig", "Supervised fine-tuning of a causal LM (full, LoRA or QLoRA) "
         "with TRL's SFTTrainer.", "ragtune.train.llm:train_llm", "runs/llm", "ragtune.data.sft:describe",
         generation=True),
    Task("seq2seq", "ragtune.config.generate:Seq2SeqConfig", "Fine-tune an encoder-decoder model (translation, "
         "rewriting) with transformers' Seq2SeqTrainer.", "ragtune.train.seq2seq:train_seq2seq", "runs/seq2seq",
         "ragtune.data.seq2seq:describe", generation=True),
    Task("clara", "ragtune.config.clara:ClaraConfig", "CLaRa: train an LM to compress documents into memory "
         "vectors and answer from them, in three stages (compress, instruct, e2e).", "ragtune.train.clara:train_clara",
         "runs/clara", "ragtune.data.clara:describe"),
    Task("retrieval", "ragtune.config.retrieval:RetrievalConfig", "Retrieval settings: BM25, dense, fusion, rerank."),
    Task("mine", "ragtune.config.retrieval:HardNegativesSection", "Hard-negative mining settings."),
    Task("query", "ragtune.config.rag:RAGSection", "How `ragtune query` retrieves and answers."),
    Task("serve", "ragtune.config.serve:ServeConfig", "How `ragtune serve` listens, batches and answers."),
)}


def task(name: str) -> Task:
    """The task called `name`; a ConfigError with a suggestion when there is none."""
    if name not in TASKS:
        from ragtune.choices import unknown
        from ragtune.errors import ConfigError

        raise ConfigError(unknown("task", name, TASKS))
    return TASKS[name]


def training_tasks() -> list[Task]:
    return [t for t in TASKS.values() if t.trains]
