"""Embedding fine-tuning recipe: config -> data -> model -> before -> train -> after -> report.

Built on sentence-transformers' SentenceTransformerTrainer; ragtune adds the run directory, the held-out
before/after evaluation and the regression verdict.
"""

from __future__ import annotations

import logging

from ragtune.config import EmbedConfig
from ragtune.data.embed import load_embed_data
from ragtune.eval.report import ScoreBook
from ragtune.eval.retrieval import LastCorpus, evaluate_model, ir_evaluator
from ragtune.models.device import choose_placement, settle
from ragtune.models.load import load_embedder
from ragtune.models.resolve import resolve_model
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir
from ragtune.train import recipe
from ragtune.train.bucketing import length_bucketing
from ragtune.train.epochs import epochs_for
from ragtune.train.freezing import FrozenPrefixCache, freeze_bottom
from ragtune.train.losses import build_loss, check_loss_fits
from ragtune.train.recipe import TrainResult
from ragtune.train.run_log import run_logging
from ragtune.train.trainer_args import build_training_args, training_kwargs
from ragtune.utils import is_main_process, world_size

log = logging.getLogger(__name__)


def _prompt_map(cfg: EmbedConfig, columns: list[str]) -> dict[str, str] | None:
    query, document = cfg.prompts.query, cfg.prompts.document
    prompts = {}
    for column in columns:
        prompt = query if column in ("anchor", "sentence1") else None if column == "score" else document
        if prompt:
            prompts[column] = prompt
    return prompts or None


def train_embed(cfg: EmbedConfig, resume: bool = False, overwrite: bool = False,
                reporter: Reporter | None = None) -> TrainResult:
    """Fine-tune an embedder as `cfg` says and evaluate it before and after on the same held-out split."""
    import datasets
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    reporter = reporter or Reporter()
    # Everything that can be checked without weights is checked first.
    data = load_embed_data(cfg.data, cfg.train.seed)
    scores = [r["score"] for r in data.train.rows] if data.train.format == "scored_pairs" else None
    # The default mining applies to pairs; given negatives (triplets) are kept unless mining is asked for.
    mining_asked = cfg.data.hard_negatives is not None and (
        data.train.format == "pairs" or "hard_negatives" in cfg.data.model_fields_set)
    mined = cfg.data.hard_negatives.num_negatives if mining_asked else 0
    given = len(data.train.columns) - 2 if data.train.format == "triplets" else 0
    check_loss_fits(cfg.loss, data.train.format, scores, mined or given)
    placement = choose_placement(cfg.model.device, cfg.model.precision)
    recipe.seed_everything(cfg.train.seed)
    model = load_embedder(cfg.model.name, placement, cfg.model.max_seq_length)
    recipe.set_dropout(model, cfg.model.dropout)
    freeze_bottom(model, cfg.train.freeze_layers)
    loss = build_loss(model, cfg.loss, cfg.loss_args, cfg.matryoshka_dims)
    mining = None
    if mining_asked:
        from ragtune.retrieval.mine import mine_for_training, mining_tools

        with reporter.phase("Mining hard negatives"):
            tools = mining_tools(cfg.data.hard_negatives, data.eval.corpus, cfg.model.name, placement)
            data.train, mining = mine_for_training(data.train, data.eval.corpus, cfg.data.hard_negatives, *tools)
    epochs, epochs_why = epochs_for(cfg.train, len(data.train.rows), world_size())
    cfg.train.num_train_epochs = epochs  # config.yaml records the number the run trains
    # Only now, with every input checked, is the run directory touched.
    run_dir = recipe.open_run(cfg, resume, overwrite)

    with run_logging(RunDir(run_dir).log):
        training, encoding = settle(placement, model, "train"), settle(placement, model, "encode")
        reporter.note(f"device {placement.device}; training {training.precision} ({training.reason}); encoding "
                      f"{encoding.precision} ({encoding.reason})")
        reporter.note(f"data: {len(data.train.rows)} {data.train.format} training examples; eval {data.eval.name}: "
                      f"{len(data.eval.queries)} queries over {len(data.eval.corpus)} documents; {epochs:g} epochs "
                      f"({epochs_why})")
        for warning in data.train.warnings[:20]:
            log.warning(warning)
        for line in mining.lines() if mining else []:
            reporter.note(f"hard negatives: {line}")
        base_path = resolve_model(cfg.model.name)  # untouched weights: their corpus embeddings may be cached
        # The bf16 CPU path encodes with a copy of the weights, which the frozen-layer cache cannot see.
        bf16_copy = encoding.device == "cpu" and encoding.precision != "fp32"
        frozen = FrozenPrefixCache(model, 0 if bf16_copy else cfg.train.freeze_layers)

        book, last = ScoreBook(), LastCorpus()

        def evaluate_base() -> dict[str, float]:
            with frozen.recording():
                result = evaluate_model(model, data.eval, cfg.eval, placement, cfg.prompts, cache_as=base_path)
            book.before = result.scores
            return result.metrics

        before = recipe.evaluate_before(run_dir, resume, reporter, cfg.model.name, data.eval.name, evaluate_base,
                                        book)

        train_dataset = datasets.Dataset.from_list(data.train.rows)
        kwargs = training_kwargs(cfg.train, run_dir, training, cfg.eval.primary_metric, show_progress=False)
        kwargs.update(batch_sampler=cfg.train.batch_sampler, prompts=_prompt_map(cfg, data.train.columns))
        args = build_training_args(SentenceTransformerTrainingArguments, kwargs)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                             evaluator=ir_evaluator(data.eval, cfg.eval, placement, cfg.prompts,
                                                                    frozen.replaying, book, last),
                                             callbacks=recipe.callbacks(run_dir, cfg, reporter))
        with length_bucketing(model, cfg.train.length_buckets):
            train_seconds = recipe.train(trainer, run_dir, resume, reporter)
        if not is_main_process():
            return TrainResult(run_dir, None, train_seconds, len(train_dataset))


        def evaluate_after() -> dict[str, float]:
            with reporter.phase("Evaluating the tuned model"), frozen.replaying():
                result = evaluate_model(model, data.eval, cfg.eval, placement, cfg.prompts, last=last)
            book.keep(None, result.scores)
            return result.metrics

        final, best, after = recipe.conclude(trainer, run_dir, model.save_pretrained, cfg.eval.primary_metric,
                                             evaluate_after, book)

        def save_base(path: str) -> None:
            load_embedder(cfg.model.name, placement, cfg.model.max_seq_length).save_pretrained(path)

        kept_base = cfg.train.base_as_candidate and recipe.keep_base_unless_beaten(
            run_dir, cfg.eval.primary_metric, before, after, save_base)
        if not kept_base:  # the next retriever over final/ (an index, `query`, the RAG stack) skips the encoding
            last.cache_as(model, str(final))
        if frozen.states:
            log.info(frozen.summary())
        details = {"model": cfg.model.name, "data": str(cfg.data.train), "eval split": data.eval.name,
                   "train examples": str(len(train_dataset)), "loss": cfg.loss,
                   "device": f"{training.device} / {training.precision}", "train time": f"{train_seconds:.1f} s"}
        comparison = recipe.finish(run_dir, cfg, before, after, final, data.eval.name, details,
                                   f"ragtune train embed: {run_dir.name}", best, kept_base, book=book, model=model)
        return TrainResult(run_dir, comparison, train_seconds, len(train_dataset))
