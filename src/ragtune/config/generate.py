"""Generator configs: causal-LM SFT (`LLMConfig`) and seq2seq (`Seq2SeqConfig`), sharing LoRA and evaluation."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ragtune.choices import one_of
from ragtune.config.base import Precision, Section
from ragtune.config.schema import (
    DataFilesSection,
    ModelSection,
    OutputSection,
    TaskConfig,
    TrainSection,
    default_output,
)

GENERATION_METRICS = ("perplexity", "rouge_l", "bleu", "chrf", "exact_match", "f1", "accuracy",
                      "embedding_similarity")
LLM_FORMATS = ("auto", "alpaca", "instruction", "chat", "prompt_completion", "text", "hh")


class LoraSection(Section):
    r: int = Field(16, gt=0, description="LoRA rank")
    alpha: int = Field(32, gt=0, description="LoRA scaling alpha")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA path")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt (e.g. [q_proj, v_proj]) or all-linear")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    use_rslora: bool = Field(False, description="rank-stabilised scaling alpha/sqrt(r)")


class GenerationModelSection(ModelSection):
    name: str = Field("", description="HF hub id or local path of the model to start from")
    dtype: Precision = Field("auto", description="weight dtype when loading")
    attn_implementation: str | None = Field(None, description="e.g. sdpa, eager, flash_attention_2")


class GenerationDataSection(DataFilesSection):
    format: str = Field("auto", description="auto | alpaca | instruction | chat | prompt_completion | text | hh "
                        "(seq2seq: auto | translation)")
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="map a role (instruction, input, output, prompt, completion, messages, "
                                    "text, source, target, ...) to your column")
    train_target: str | None = Field(None, description="seq2seq: target-side text file, line-aligned with data.train")
    eval_target: str | None = Field(None, description="seq2seq: target-side text file, line-aligned with data.eval")
    max_eval_samples: int | None = Field(200, gt=0, description="evaluate on at most N held-out examples")
    system_prompt: str | None = Field(None, description="system message prepended to chats that have none")
    # columns' roles are checked against the detected format when the data is read


class GenerationEvalSection(Section):
    primary_metric: str = Field("perplexity", description="metric for best checkpoint and verdict: "
                                + ", ".join(GENERATION_METRICS))
    metrics: list[str] = Field(default_factory=lambda: ["perplexity", "rouge_l", "bleu", "chrf", "exact_match", "f1"],
                               description="metrics computed before and after training")
    max_new_tokens: int = Field(128, gt=0, description="greedy generation length for the generation metrics")
    generation_samples: int = Field(32, ge=0, description="eval examples generated for the text metrics "
                                    "(perplexity uses every eval example)")
    samples_per_eval: int = Field(4, ge=0, description="fixed eval prompts written to samples.jsonl at each eval")
    embedder: str = Field("sentence-transformers/all-MiniLM-L6-v2",
                          description="model for embedding_similarity between generated and reference answers")
    labels: list[str] = Field(default_factory=list,
                              description="label set for accuracy (e.g. [yes, no, maybe]); the first label found "
                              "in the generated text is the prediction")
    batch_size: int = Field(8, gt=0, description="eval batch size")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for metric in metrics:
            one_of("metric", metric, GENERATION_METRICS, f"choose from {', '.join(GENERATION_METRICS)}")
        return list(dict.fromkeys(metrics))

    @model_validator(mode="after")
    def _primary_is_computed(self) -> GenerationEvalSection:
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric '{self.primary_metric}' is not in eval.metrics {self.metrics}")
        if "accuracy" in self.metrics and not self.labels:
            raise ValueError("metric accuracy needs eval.labels, e.g. [yes, no, maybe]")
        return self


class Seq2SeqEvalSection(GenerationEvalSection):
    primary_metric: str = Field("bleu", description="metric for best checkpoint and verdict: "
                                + ", ".join(GENERATION_METRICS))
    metrics: list[str] = Field(default_factory=lambda: ["perplexity", "bleu", "chrf"],
                               description="metrics computed before and after training")


class GenerationTrainSection(TrainSection):
    per_device_train_batch_size: int = Field(8, gt=0, description="sequences (or packed blocks) per device step")
    learning_rate: float = Field(2.0e-4, gt=0, description="peak learning rate (LoRA default; use ~2e-5 for full)")
    optim: str = Field("adamw_torch", description="HF optimizer name; adamw_8bit (bitsandbytes) on CUDA")


class GeneratorConfig(TaskConfig):
    """What causal-LM and seq2seq fine-tuning share."""

    model: GenerationModelSection = Field(default_factory=GenerationModelSection)
    data: GenerationDataSection = Field(default_factory=GenerationDataSection)
    train: GenerationTrainSection = Field(default_factory=GenerationTrainSection)
    eval: GenerationEvalSection = Field(default_factory=GenerationEvalSection)
    method: Literal["full", "lora", "qlora"] = Field("lora", description="full fine-tuning, LoRA, or QLoRA "
                                                     "(4-bit NF4, CUDA only)")
    lora: LoraSection = Field(default_factory=LoraSection)

    @model_validator(mode="after")
    def _model_given(self) -> GeneratorConfig:
        if not self.model.name:
            raise ValueError("model.name is not set; give a hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or a local path")
        return self


class LLMConfig(GeneratorConfig):
    """Supervised fine-tuning of a causal LM with TRL's SFTTrainer."""

    task: ClassVar[str] = "llm"
    output: OutputSection = Field(default_factory=default_output("llm"))
    template: str = Field("auto", description="auto (the model's own chat template, else chatml) | chatml | alpaca")
    max_length: int = Field(1024, gt=8, description="tokens per example (and per packed block)")
    packing: bool = Field(True, description="pack examples into max_length blocks (best-fit decreasing, "
                          "padding-free); the mask keeps examples from attending to each other")
    padding_free: bool = Field(True, description="without packing: flatten each batch without padding")
    train_on_prompt: bool = Field(False, description="also train on prompts/user turns (default: answers only)")
    answer_start_weight: float = Field(
        1.0, ge=1.0, le=100.0, description="loss weight of each answer's first token, where a decision leads the "
        "answer (`Yes. <why> [1]` from `data rag-sft`): one token among ~40 otherwise; 1 = plain SFT")
    balance_answer_starts: bool = Field(
        False, description="also scale each answer's first-token weight by how rare that token is among the "
        "training answers' first tokens (N / (kinds x count), clipped to 0.1-10): a class-balanced loss on the "
        "decision, so a rare 'maybe' counts as much as a common 'yes'")
    special_tokens: list[str] = Field(default_factory=list, description="tokens to add (embeddings are resized "
                                      "and trained)")

    @field_validator("template")
    @classmethod
    def _known_template(cls, name: str) -> str:
        return one_of("template", name, ("auto", "chatml", "alpaca", "model"), "use auto, chatml or alpaca")


class Seq2SeqConfig(GeneratorConfig):
    """Text-to-text fine-tuning (translation, rewriting) with transformers' Seq2SeqTrainer."""

    task: ClassVar[str] = "seq2seq"
    eval: Seq2SeqEvalSection = Field(default_factory=Seq2SeqEvalSection)
    output: OutputSection = Field(default_factory=default_output("seq2seq"))
    method: Literal["full", "lora", "qlora"] = Field("full", description="full fine-tuning or LoRA")
    source_lang: str | None = Field(None, description="default source language code (NLLB style: eng_Latn)")
    target_lang: str | None = Field(None, description="default target language code (NLLB style: deu_Latn)")
    source_prefix: str = Field("", description="text prepended to every source, e.g. 'translate English to "
                               "German: ' for T5")
    max_source_length: int = Field(256, gt=0, description="source tokens")
    max_target_length: int = Field(256, gt=0, description="target tokens")
    num_beams: int = Field(1, gt=0, description="beams for generation in evaluation")

    @field_validator("source_lang", "target_lang")
    @classmethod
    def _code_shape(cls, code: str | None) -> str | None:
        if code is not None and not re.fullmatch(r"[A-Za-z]{2,3}(_[A-Za-z]{4})?|[a-z]{2}_[A-Z]{2}", code):
            raise ValueError(f"'{code}' is not a language code; use NLLB style (eng_Latn), mBART style (en_XX) "
                             "or ISO 639 (en)")
        return code
