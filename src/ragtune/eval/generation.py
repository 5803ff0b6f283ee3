"""Generation evaluation: perplexity on the reference answers, then greedy answers scored by the text metrics.

One evaluator serves before/after evaluation, best-checkpoint selection during training (it also appends fixed
samples to samples.jsonl, so users watch answers change), and `ragtune eval generation`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ragtune.config.generate import GenerationEvalSection
from ragtune.data.sft_tokens import IGNORE
from ragtune.eval.text_metrics import text_metrics

log = logging.getLogger(__name__)


@dataclass
class EvalItem:
    """One held-out example: tokenized for perplexity, plus the context and the reference for generation."""

    input_ids: list[int]
    labels: list[int]
    context: object  # chat messages or a prompt (causal LM), source text (seq2seq)
    reference: str
    decoder_labels: list[int] | None = None  # seq2seq: target ids (input_ids are the source)
    shown: str = ""  # the prompt as samples.jsonl shows it


@torch.inference_mode()
def perplexity(model, items: list[EvalItem], batch_size: int, pad_id: int) -> float:
    """exp(mean negative log-likelihood per trained token) over every item."""
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        width = max(len(b.input_ids) for b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, item in enumerate(batch):
            ids[i, : len(item.input_ids)] = torch.tensor(item.input_ids)
            mask[i, : len(item.input_ids)] = 1
        if batch[0].decoder_labels is not None:  # seq2seq: the loss is over the target tokens
            target_width = max(len(b.decoder_labels) for b in batch)
            labels = torch.full((len(batch), target_width), IGNORE, dtype=torch.long)
            for i, item in enumerate(batch):
                labels[i, : len(item.decoder_labels)] = torch.tensor(item.decoder_labels)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).logits
            shifted_logits, shifted_labels = logits, labels
        else:
            labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
            for i, item in enumerate(batch):
                labels[i, : len(item.labels)] = torch.tensor(item.labels)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            shifted_logits, shifted_labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(shifted_logits.float().reshape(-1, shifted_logits.shape[-1]),
                                                shifted_labels.to(device).reshape(-1), ignore_index=IGNORE,
                                                reduction="sum")
        total_nll += float(nll)
        total_tokens += int((shifted_labels != IGNORE).sum())
    return math.exp(min(total_nll / max(total_tokens, 1), 50.0))


@dataclass
class GenerationEvaluator:
    """Perplexity plus greedy-generation metrics on held-out items; optionally logs fixed samples."""

    items: list[EvalItem]
    cfg: GenerationEvalSection
    pad_id: int
    generate: Callable[[object, list[object]], list[str]]  # (model, contexts) -> answers
    samples_path: Path | None = None
    primary_metric: str = "perplexity"
    _last: dict = field(default_factory=dict)

    def __post_init__(self):
        self.primary_metric = self.cfg.primary_metric

    def __call__(self, model, step: int | None = None) -> dict[str, float]:
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        if "perplexity" in self.cfg.metrics:
            metrics["perplexity"] = round(perplexity(model, self.items, self.cfg.batch_size, self.pad_id), 6)
        text = [m for m in self.cfg.metrics if m != "perplexity"]
        with_context = [item for item in self.items if item.context]  # raw text has nothing to answer
        generated_for = with_context[: max(self.cfg.generation_samples, self.cfg.samples_per_eval)]
        answers = self.generate(model, [item.context for item in generated_for]) if generated_for and (
            text or self.samples_path) else []
        scored = answers[: self.cfg.generation_samples]
        metrics.update(text_metrics(scored, [i.reference for i in generated_for[: len(scored)]], text,
                                    self.cfg.labels, self.cfg.embedder))
        if self.samples_path is not None and answers:
            self._write_samples(step, generated_for[: self.cfg.samples_per_eval], answers)
        log.info("generation eval (%.1f s): %s", time.perf_counter() - start, metrics)
        return metrics

    def _write_samples(self, step: int | None, items: list[EvalItem], answers: list[str]) -> None:
        with open(self.samples_path, "a", encoding="utf-8") as out:
            for i, (item, answer) in enumerate(zip(items, answers)):
                out.write(json.dumps({"step": step, "sample": i, "prompt": item.shown, "reference": item.reference,
                                      "generated": answer}, ensure_ascii=False) + "\n")
