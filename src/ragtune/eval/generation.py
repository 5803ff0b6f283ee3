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
from ragtune.eval.report import ScoreBook
from ragtune.eval.text_metrics import score_texts

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
    book: ScoreBook | None = None  # each evaluation's per-example text scores, for the paired before/after test
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
        means, per_example = score_texts(scored, [i.reference for i in generated_for[: len(scored)]], text,
                                         self.cfg.labels, self.cfg.embedder)
        metrics.update(means)
        if self.book is not None:
            self.book.keep(step, {m: {str(i): v for i, v in enumerate(values)} for m, values in per_example.items()})
        if self.samples_path is not None and answers:
            self._write_samples(step, generated_for[: self.cfg.samples_per_eval], answers)
        log.info("generation eval (%.1f s): %s", time.perf_counter() - start, metrics)
        return metrics

    def _write_samples(self, step: int | None, items: list[EvalItem], answers: list[str]) -> None:
        with open(self.samples_path, "a", encoding="utf-8") as out:
            for i, (item, answer) in enumerate(zip(items, answers)):
                out.write(json.dumps({"step": step, "sample": i, "prompt": item.shown, "reference": item.reference,
                                      "generated": answer}, ensure_ascii=False) + "\n")


def chat_evaluator(cfg, tokenizer, examples, encoded, stops: list[int], samples_path: Path | None = None,
                   book: ScoreBook | None = None):
    """The causal-LM evaluator: perplexity on the encoded examples, greedy chat answers for the text metrics."""
    from ragtune.models.language_model import chat_prompt, generate_text

    def shown(context) -> str:
        return context if isinstance(context, str) else context[-1]["content"]

    def generate(model, contexts):
        prompts = [chat_prompt(tokenizer, c) for c in contexts]
        return generate_text(model, tokenizer, prompts, cfg.eval.max_new_tokens, stops, cfg.eval.batch_size)

    items = [EvalItem(e.input_ids, e.labels, x.context, x.reference, shown=shown(x.context))
             for x, e in zip(examples, encoded)]
    return GenerationEvaluator(items, cfg.eval, tokenizer.pad_token_id, generate, samples_path, book=book)


def seq2seq_evaluator(cfg, encoder, pairs, samples_path: Path | None = None, book: ScoreBook | None = None):
    """The seq2seq evaluator: perplexity on the targets, translations (each target language's BOS forced) scored
    by the text metrics."""
    from itertools import groupby

    from ragtune.models.language_model import generate_text

    def generate(model, sources):
        answers: dict[int, str] = {}
        indexed = sorted(enumerate(sources), key=lambda item: item[1].target_lang or "")
        for _, group in groupby(indexed, key=lambda item: item[1].target_lang or ""):
            group = list(group)
            extra = {"num_beams": cfg.num_beams}
            bos = encoder.forced_bos(group[0][1])
            if bos is not None:
                extra["forced_bos_token_id"] = bos
                encoder.tokenizer.src_lang = group[0][1].source_lang
            texts = generate_text(model, encoder.tokenizer, [encoder.source_text(p) for _, p in group],
                                  cfg.eval.max_new_tokens, None, cfg.eval.batch_size, **extra)
            answers.update({i: text for (i, _), text in zip(group, texts)})
        return [answers[i] for i in range(len(sources))]

    items = [EvalItem(r["input_ids"], [], p, p.target, r["labels"], shown=p.source)
             for p, r in ((p, encoder.encode(p)) for p in pairs)]
    return GenerationEvaluator(items, cfg.eval, encoder.tokenizer.pad_token_id, generate, samples_path, book=book)
