"""Causal-LM SFT recipe: config -> data -> template + loss mask -> model (+LoRA) -> before -> train -> after.

Built on TRL's SFTTrainer and PEFT. ragtune renders and masks the data itself (so it can show what is trained
and refuse examples that train on nothing), then hands TRL pre-tokenized input_ids/labels; TRL packs them
(best-fit decreasing, padding-free) and trains.
"""

from __future__ import annotations

import logging
from collections import Counter

from trl import SFTTrainer

from ragtune.config.generate import LLMConfig
from ragtune.data.sft import load_sft_data
from ragtune.data.sft_tokens import encode_all, marked
from ragtune.eval.generation import chat_evaluator
from ragtune.eval.report import ScoreBook
from ragtune.models.device import choose_placement, settle
from ragtune.models.language_model import (
    apply_lora,
    check_max_length,
    check_method,
    load_generator,
    load_tokenizer,
)
from ragtune.models.templates import setup_template, stop_token_ids
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir
from ragtune.train import recipe
from ragtune.train.evaluating import EvaluatorMixin
from ragtune.train.recipe import TrainResult
from ragtune.train.run_log import run_logging
from ragtune.train.trainer_args import build_training_args, training_kwargs
from ragtune.utils import is_main_process

log = logging.getLogger(__name__)


def answer_starts(labels):
    """(batch, seq - 1) booleans: the shifted-label positions that hold the first trained token after untrained ones
    (each answer's first token; a packed block's examples each start with their prompt, so none is missed)."""
    trained = labels != -100
    return trained[:, 1:] & ~trained[:, :-1]


def first_token_counts(labels_lists) -> Counter:
    """How often each token id opens an answer (answer_starts' positions) in the encoded examples."""
    import torch

    counts = Counter()
    for labels in labels_lists:
        row = torch.tensor([[-100, *labels]])  # an untrained slot in front: a first token trained counts too
        counts.update(row[:, 1:][answer_starts(row)].tolist())
    return counts


def balance_factors(counts: Counter) -> dict[int, float]:
    """Class-balanced factors for answers' first tokens: N / (kinds x count), clipped to [0.1, 10]."""
    total, kinds = sum(counts.values()), len(counts)
    return {t: min(10.0, max(0.1, total / (kinds * n))) for t, n in counts.items()}


def check_answer_start_weight(cfg: LLMConfig, fmt: str) -> None:
    """answer_start_weight needs answers that start after untrained prompt tokens, and TRL's plain token loss."""
    if cfg.answer_start_weight == 1.0 and not cfg.balance_answer_starts:
        return
    from ragtune.errors import ConfigError

    if cfg.train_on_prompt or fmt == "text":
        raise ConfigError(f"answer_start_weight={cfg.answer_start_weight:g} / balance_answer_starts weigh each "
                          "answer's first token, but "
                          f"{'train_on_prompt trains every token' if cfg.train_on_prompt else 'raw text has no answers'}"
                          "; drop them or train on answers only")
    extra = cfg.train.extra
    if extra.get("loss_type", "nll") != "nll" or extra.get("label_smoothing_factor") or extra.get("use_liger_kernel"):
        raise ConfigError("answer_start_weight and balance_answer_starts work with TRL's plain token loss only; "
                          "drop train.extra's loss_type, label_smoothing_factor or use_liger_kernel, or drop them")


class RagtuneSFTTrainer(EvaluatorMixin, SFTTrainer):
    """TRL's SFTTrainer, evaluated by ragtune's generation evaluator; with `answer_start_weight` > 1 each answer's
    first token weighs that much more in the training loss, times its factor in `start_factors` (token id ->
    factor, from balance_factors) where given (TRL's own loss otherwise)."""

    def __init__(self, *args, answer_start_weight: float = 1.0, start_factors: dict[int, float] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_start_weight, self.start_factors = answer_start_weight, start_factors or {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        plain = (self.args.loss_type != "nll" or self.label_smoother is not None or self.compute_loss_func is not None
                 or self.aux_loss_enabled)  # TRL's other losses: refused by check_answer_start_weight
        if (self.answer_start_weight == 1.0 and not self.start_factors) or not model.training or plain:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch

        outputs = model(**{**inputs, "use_cache": False}, fused_lm_head=True)  # TRL's fused head: (batch, seq - 1)
        labels = inputs["labels"]
        start_weight = torch.full(labels[:, 1:].shape, self.answer_start_weight, device=labels.device)
        for token, factor in self.start_factors.items():
            start_weight[labels[:, 1:] == token] *= factor
        weights = torch.where(answer_starts(labels), start_weight, 1.0).to(outputs.log_probs.dtype)
        tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -(outputs.log_probs * weights).sum() / torch.as_tensor(tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages, the token count spans the ranks
        return (loss, outputs) if return_outputs else loss


def start_factors(cfg: LLMConfig, encoded, tokenizer, reporter: Reporter) -> dict[int, float]:
    """balance_answer_starts: each first token's factor, said on the start-up line (the 5 commonest)."""
    if not cfg.balance_answer_starts:
        return {}
    counts = first_token_counts([e.labels for e in encoded])
    factors = balance_factors(counts)
    shown = ", ".join(f"{tokenizer.decode([t])!r} x{n} -> {cfg.answer_start_weight * factors[t]:.3g}"
                      for t, n in counts.most_common(5))
    reporter.note(f"answer starts, class-balanced ({len(counts)} kinds): {shown}")
    return factors


def sft_kwargs(cfg: LLMConfig) -> dict:
    """TRL's own switches: sequence length, packing (BFD, padding-free) or padding-free batches."""
    # ragtune truncates while masking; TRL re-applies max_length only when it packs.
    return {"max_length": cfg.max_length if cfg.packing else None, "packing": cfg.packing, "packing_strategy": "bfd",
            "padding_free": cfg.padding_free or cfg.packing, "optim": cfg.train.optim,
            "dataset_kwargs": {"skip_prepare_dataset": False}, "eval_packing": False}


def train_llm(cfg: LLMConfig, resume: bool = False, overwrite: bool = False,
              reporter: Reporter | None = None) -> TrainResult:
    """Supervised fine-tuning of a causal LM, measured before and after on the same held-out examples."""
    import datasets
    from trl import SFTConfig

    reporter = reporter or Reporter()
    check_method(cfg.method)
    fmt, train_examples, eval_examples = load_sft_data(cfg.data, cfg.train.seed)
    if fmt == "text":  # raw text has no answers to generate: only perplexity measures it
        if cfg.eval.primary_metric != "perplexity":
            from ragtune.errors import ConfigError

            raise ConfigError(f"raw text data has no reference answers; use eval.primary_metric=perplexity "
                              f"(not {cfg.eval.primary_metric})")
        cfg.eval.metrics = ["perplexity"]
    check_answer_start_weight(cfg, fmt)
    tokenizer = load_tokenizer(cfg.model.name)
    template, added = setup_template(tokenizer, cfg.template, cfg.special_tokens)
    train_encoded = encode_all(train_examples, tokenizer, cfg.max_length, cfg.train_on_prompt)
    eval_encoded = encode_all(eval_examples, tokenizer, cfg.max_length, cfg.train_on_prompt, what="eval")
    placement = choose_placement(cfg.model.device, cfg.model.precision)
    recipe.seed_everything(cfg.train.seed)  # new heads, LoRA matrices and resized embeddings start the same
    model = load_generator(cfg.model.name, placement, cfg.method, cfg.model.dtype,
                           attn_implementation=cfg.model.attn_implementation)
    check_max_length(model, cfg.max_length)
    recipe.set_dropout(model, cfg.model.dropout)
    stops = stop_token_ids(tokenizer, template)
    if added:
        model.resize_token_embeddings(len(tokenizer))
    model.generation_config.eos_token_id = stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.method in ("lora", "qlora"):
        new_ids = tokenizer.convert_tokens_to_ids(added) if added else None
        model = apply_lora(model, cfg.lora, cfg.method, new_ids, cfg.train.gradient_checkpointing)
    placement = settle(placement, model, "train")
    run_dir = recipe.open_run(cfg, resume, overwrite)

    with run_logging(RunDir(run_dir).log):
        reporter.note(f"device {placement.device}, precision {placement.precision} ({placement.reason}); "
                      f"method {cfg.method}; template {template}")
        reporter.note(f"data: {len(train_encoded)} {fmt} examples, {sum(e.trained for e in train_encoded):,} trained "
                      f"tokens; eval: {len(eval_encoded)} examples")
        reporter.note(f"example (trained tokens in ⟦ ⟧): {marked(train_encoded[0], tokenizer)}")
        factors = start_factors(cfg, train_encoded, tokenizer, reporter)
        book = ScoreBook()
        evaluator = chat_evaluator(cfg, tokenizer, eval_examples, eval_encoded, stops, RunDir(run_dir).samples, book)
        before = recipe.evaluate_before(run_dir, resume, reporter, cfg.model.name, "held-out",
                                        recipe.base_evaluation(evaluator, model, book), book)
        kwargs = training_kwargs(cfg.train, run_dir, placement, cfg.eval.primary_metric, show_progress=False)
        args = build_training_args(SFTConfig, {**kwargs, **sft_kwargs(cfg)})
        rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in train_encoded]
        eval_rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in eval_encoded[:8]]
        trainer = RagtuneSFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                    eval_dataset=datasets.Dataset.from_list(eval_rows), processing_class=tokenizer,
                                    callbacks=recipe.callbacks(run_dir, cfg, reporter), evaluator=evaluator,
                                    answer_start_weight=cfg.answer_start_weight, start_factors=factors)
        train_seconds = recipe.train(trainer, run_dir, resume, reporter)
        if not is_main_process():
            return TrainResult(run_dir, None, train_seconds, len(rows))

        final, best, after = recipe.conclude(trainer, run_dir, recipe.save_with_tokenizer(trainer.model, tokenizer),
                                             cfg.eval.primary_metric, lambda: evaluator(trainer.model, step=None), book)
        details = {"model": cfg.model.name, "method": cfg.method, "data": f"{cfg.data.train} ({fmt})",
                   "template": template, "train examples": str(len(rows)), "packing": str(cfg.packing),
                   "device": f"{placement.device} / {placement.precision}", "train time": f"{train_seconds:.1f} s"}
        title = f"ragtune train llm: {run_dir.name}"
        from ragtune.models.packaged_llm import provenance
        from ragtune.models.resolve import resolve_model

        comparison = recipe.finish(run_dir, cfg, before, after, final, "held-out", details, title, best, book=book,
                                   added_tokens=added, provenance=provenance(resolve_model(cfg.model.name)))
        return TrainResult(run_dir, comparison, train_seconds, len(rows))
