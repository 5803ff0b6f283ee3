"""Seq2seq recipe (translation, rewriting): config -> pairs -> model (+LoRA) -> before -> train -> after.

Built on transformers' Seq2SeqTrainer; evaluation generates with the target language forced where the model uses
language codes, and scores BLEU/chrF (sacrebleu) and perplexity on the references.
"""

from __future__ import annotations

import logging

from transformers import Seq2SeqTrainer

from ragtune.config.generate import Seq2SeqConfig
from ragtune.data.seq2seq import Encoder, load_seq2seq_data
from ragtune.eval.generation import seq2seq_evaluator
from ragtune.eval.report import ScoreBook
from ragtune.models.device import choose_placement, settle
from ragtune.models.language_model import apply_lora, check_method, load_generator, load_tokenizer
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir
from ragtune.train import recipe
from ragtune.train.evaluating import EvaluatorMixin
from ragtune.train.recipe import TrainResult
from ragtune.train.run_log import run_logging
from ragtune.train.trainer_args import build_training_args, training_kwargs
from ragtune.utils import is_main_process

log = logging.getLogger(__name__)


class RagtuneSeq2SeqTrainer(EvaluatorMixin, Seq2SeqTrainer):
    """transformers' Seq2SeqTrainer, evaluated by ragtune's generation evaluator."""


def train_seq2seq(cfg: Seq2SeqConfig, resume: bool = False, overwrite: bool = False,
                  reporter: Reporter | None = None) -> TrainResult:
    """Fine-tune an encoder-decoder model and compare BLEU/chrF/perplexity before and after."""
    import datasets
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

    reporter = reporter or Reporter()
    check_method(cfg.method)
    train_pairs, eval_pairs = load_seq2seq_data(cfg.data, cfg.source_lang, cfg.target_lang, cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model.name)
    placement = choose_placement(cfg.model.device, cfg.model.precision)
    recipe.seed_everything(cfg.train.seed)
    model = load_generator(cfg.model.name, placement, cfg.method, cfg.model.dtype, seq2seq=True,
                           attn_implementation=cfg.model.attn_implementation)
    recipe.set_dropout(model, cfg.model.dropout)
    encoder = Encoder(tokenizer, model.config.model_type, cfg.source_prefix, cfg.max_source_length,
                      cfg.max_target_length)
    encoder.check_languages(train_pairs + eval_pairs)
    rows = [encoder.encode(p) for p in train_pairs]
    eval_rows = [encoder.encode(p) for p in eval_pairs]
    if cfg.method in ("lora", "qlora"):
        model = apply_lora(model, cfg.lora, cfg.method, None, cfg.train.gradient_checkpointing, seq2seq=True)
    placement = settle(placement, model, "train")
    run_dir = recipe.open_run(cfg, resume, overwrite)

    with run_logging(RunDir(run_dir).log):
        reporter.note(f"device {placement.device}, precision {placement.precision} ({placement.reason}); "
                      f"method {cfg.method}; language codes: {'yes' if encoder.language_codes else 'no'}")
        reporter.note(f"data: {len(rows)} training pairs, {len(eval_rows)} held-out pairs")
        book = ScoreBook()
        evaluator = seq2seq_evaluator(cfg, encoder, eval_pairs, RunDir(run_dir).samples, book)
        before = recipe.evaluate_before(run_dir, resume, reporter, cfg.model.name, "held-out",
                                        recipe.base_evaluation(evaluator, model, book), book)
        kwargs = training_kwargs(cfg.train, run_dir, placement, cfg.eval.primary_metric, show_progress=False)
        args = build_training_args(Seq2SeqTrainingArguments, {**kwargs, "optim": cfg.train.optim})
        trainer = RagtuneSeq2SeqTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                        eval_dataset=datasets.Dataset.from_list(eval_rows[:8]),
                                        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                                        processing_class=tokenizer, callbacks=recipe.callbacks(run_dir, cfg, reporter),
                                        evaluator=evaluator)
        train_seconds = recipe.train(trainer, run_dir, resume, reporter)
        if not is_main_process():
            return TrainResult(run_dir, None, train_seconds, len(rows))

        final, best, after = recipe.conclude(trainer, run_dir, recipe.save_with_tokenizer(trainer.model, tokenizer),
                                             cfg.eval.primary_metric, lambda: evaluator(trainer.model, step=None), book)
        details = {"model": cfg.model.name, "method": cfg.method, "data": str(cfg.data.train),
                   "train pairs": str(len(rows)), "device": f"{placement.device} / {placement.precision}",
                   "train time": f"{train_seconds:.1f} s"}
        comparison = recipe.finish(run_dir, cfg, before, after, final, "held-out", details,
                                   f"ragtune train seq2seq: {run_dir.name}", best, book=book)
        return TrainResult(run_dir, comparison, train_seconds, len(rows))
