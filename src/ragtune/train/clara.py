"""CLaRa recipe (`ragtune train clara`): config -> records -> CLaRa model (from the base LM, or from the previous
stage's run) -> before -> train -> after -> report.

- compress (stage 1) and instruct (stage 2) train the compressor and generator adapters (and the memory tokens) on
  CE + mse_weight x MSE; e2e (stage 3) adds the query adapter (started from the compressor) and trains it with the
  generator through the differentiable top-k, on CE alone.
- Evaluation: the perplexity of the held-out answers read from the compressed documents (the primary metric), the
  text metrics of greedy answers, and for e2e the recall of the top k the query adapter picks.
- Checkpoints hold what trains (adapters, memory rows), not the base LM, so they stay small; resume restores them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from ragtune.clara.model import CLARA_FILE, Clara, ClaraShape, embedding_tables
from ragtune.config.clara import ClaraConfig
from ragtune.data.clara import ClaraRecord, load_clara_data
from ragtune.errors import ConfigError
from ragtune.eval.report import ScoreBook
from ragtune.eval.text_metrics import score_texts
from ragtune.models.device import choose_placement
from ragtune.models.language_model import load_generator, load_tokenizer
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir
from ragtune.train import recipe
from ragtune.train.evaluating import EvaluatorMixin
from ragtune.train.recipe import TrainResult
from ragtune.train.run_log import run_logging
from ragtune.train.trainer_args import build_training_args, training_kwargs
from ragtune.utils import is_main_process

log = logging.getLogger(__name__)
TRAINS = {"compress": ["compressor", "generator"], "instruct": ["compressor", "generator"],
          "e2e": ["query", "generator"]}


class ClaraModule(torch.nn.Module):
    """What the Trainer steps: one batch of records in, the stage's loss out."""

    def __init__(self, clara: Clara, cfg: ClaraConfig):
        super().__init__()
        self.clara, self.stage, self.top_k, self.temperature = clara, cfg.stage, cfg.top_k, cfg.temperature

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **options):
        """What the Trainer calls for `train.gradient_checkpointing`: the base LM's own checkpointing (the
        embedding rows train, so the inputs already carry a gradient)."""
        base = self.clara.model.get_base_model()
        kwargs = activation_checkpointing_kwargs or {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **options)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def forward(self, documents, question, answer):
        if self.stage == "e2e":
            return self.clara.e2e_loss(documents, question, answer, self.top_k, self.temperature)
        return self.clara.stage_loss(documents, question, answer)


def collate(rows: list[dict]) -> dict:
    return {"documents": [r["documents"] for r in rows], "question": [r["question"] for r in rows],
            "answer": [r["answer"] for r in rows]}


class ClaraTrainer(EvaluatorMixin, Trainer):
    """The Trainer over a ClaraModule: checkpoints are the adapters and memory rows, and the embedding rows take
    no weight decay (the frozen vocabulary must not shrink)."""

    def get_decay_parameter_names(self, model) -> list[str]:
        tables = {id(t) for t in embedding_tables(self.model.clara.model.get_base_model())}
        embedding = {n for n, p in model.named_parameters() if id(p) in tables}
        return [n for n in super().get_decay_parameter_names(model) if n not in embedding]

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if self.args.should_save:
            self.model.clara.save(output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        self.model.clara.restore(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self.model.clara.restore(self.state.best_model_checkpoint)


class ClaraEvaluator:
    """Perplexity of the held-out answers from their compressed documents, text metrics of greedy answers, and
    for e2e the recall of the picked top k against the records' positives, beside the first stage's own top k
    (the candidates' order)."""

    def __init__(self, records: list[ClaraRecord], cfg: ClaraConfig, samples: Path | None, book: ScoreBook):
        self.records, self.cfg, self.samples, self.book = records, cfg, samples, book

    @torch.no_grad()
    def __call__(self, module, step: int | None = None) -> dict[str, float]:
        clara = module.clara if isinstance(module, ClaraModule) else module
        clara.model.eval()
        start, total_nll, total_tokens = time.perf_counter(), 0.0, 0
        picked, recalls, first_stage = [], [], []
        for i in range(0, len(self.records), self.cfg.eval.batch_size):
            batch = self.records[i:i + self.cfg.eval.batch_size]
            docs = [r.documents for r in batch]
            if self.cfg.stage == "e2e":
                order = [clara.rank(r.question, r.documents)[: self.cfg.top_k] for r in batch]
                picked += order
                recalls += [len(set(o) & set(r.positives)) / len(r.positives) for o, r in zip(order, batch)
                            if r.positives]
                # the candidates come in the first stage's order: its own top k, for comparison
                first_stage += [len(set(range(self.cfg.top_k)) & set(r.positives)) / len(r.positives) for r in batch
                                if r.positives]
                docs = [[r.documents[j] for j in o] for o, r in zip(order, batch)]
            memories, _ = clara.per_example(docs)
            nll, tokens = clara.answer_nll([r.question for r in batch], [r.answer for r in batch], memories)
            total_nll, total_tokens = total_nll + float(nll.sum()), total_tokens + int(tokens.sum())
        metrics = {"perplexity": round(math.exp(min(total_nll / max(total_tokens, 1), 50.0)), 6)}
        if recalls:
            metrics[f"recall@{self.cfg.top_k}"] = round(sum(recalls) / len(recalls), 6)
            metrics[f"first_stage_recall@{self.cfg.top_k}"] = round(sum(first_stage) / len(first_stage), 6)
        shown = self.records[: max(self.cfg.eval.generation_samples, self.cfg.eval.samples_per_eval)]
        answers = []
        for n, r in enumerate(shown):
            docs = [r.documents[j] for j in picked[n]] if picked else r.documents
            answers.append(clara.answer(r.question, docs, self.cfg.eval.max_new_tokens))
        text = [m for m in self.cfg.eval.metrics if m != "perplexity"]
        scored = answers[: self.cfg.eval.generation_samples]
        means, per_example = score_texts(scored, [r.answer for r in shown[: len(scored)]], text, self.cfg.eval.labels,
                                         self.cfg.eval.embedder)
        metrics.update(means)
        self.book.keep(step, {m: {str(i): v for i, v in enumerate(values)} for m, values in per_example.items()})
        if self.samples is not None:
            with open(self.samples, "a", encoding="utf-8") as out:
                for n, (r, a) in enumerate(zip(shown[: self.cfg.eval.samples_per_eval], answers)):
                    out.write(json.dumps({"step": step, "sample": n, "prompt": r.question, "reference": r.answer,
                                          "generated": a}, ensure_ascii=False) + "\n")
        clara.model.train()
        log.info("clara eval (%.1f s): %s", time.perf_counter() - start, metrics)
        return metrics


def _previous_stage(cfg: ClaraConfig) -> tuple[Path, dict]:
    """The previous stage's model folder and its clara.json, checked to be that stage's."""
    from ragtune.clara.generator import clara_folder
    from ragtune.config.clara import STAGES

    final = clara_folder(cfg.init_from)
    if final is None:
        raise ConfigError(f"init_from: {cfg.init_from} is not a finished `ragtune train clara` run (no "
                          f"final/{CLARA_FILE}); give the previous stage's run directory")
    info = json.loads((final / CLARA_FILE).read_text(encoding="utf-8"))
    was = info.get("stage")
    wanted = STAGES[STAGES.index(cfg.stage) - 1]
    if was is not None and was not in (wanted, cfg.stage):
        raise ConfigError(f"init_from: {cfg.init_from} is a stage-{was} run; stage {cfg.stage} starts from the "
                          f"{wanted} stage's run (or another {cfg.stage} run)")
    return final, info


def build_clara(cfg: ClaraConfig, placement, previous: Path | None = None) -> Clara:
    """Stage compress: fresh memory tokens and adapters over the base LM. Later stages: the previous stage's
    model (`previous`, its folder), over the same base, with the query adapter added for e2e."""
    if previous is None:
        base = load_generator(cfg.model.name, placement, "lora", cfg.model.dtype)
        clara = Clara.from_base(base, load_tokenizer(cfg.model.name), ClaraShape(cfg.compress_rate, cfg.doc_max_length),
                                cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.mse_weight)
        clara.base_name = cfg.model.name
    else:
        clara = Clara.load(previous, load_generator(cfg.model.name, placement, "lora", cfg.model.dtype))
        if (clara.shape.compress_rate, clara.shape.doc_max_length) != (cfg.compress_rate, cfg.doc_max_length):
            log.info("compress_rate and doc_max_length come from %s: %d and %d", previous, clara.shape.compress_rate,
                     clara.shape.doc_max_length)
        if cfg.stage == "e2e" and "query" not in clara.adapters:
            clara.add_query_adapter()
    clara.trainable(TRAINS[cfg.stage])
    clara.stage = cfg.stage
    return clara


def train_clara(cfg: ClaraConfig, resume: bool = False, overwrite: bool = False,
                reporter: Reporter | None = None) -> TrainResult:
    """Train one CLaRa stage and compare held-out answer perplexity (and text metrics) before and after."""
    import datasets

    reporter = reporter or Reporter()
    train_records, eval_records = load_clara_data(cfg.data, cfg.stage, cfg.candidates, cfg.train.seed)
    if cfg.stage == "e2e" and len(train_records[0].documents) < cfg.top_k:
        raise ConfigError(f"top_k: {cfg.top_k} is more than the {len(train_records[0].documents)} candidates per "
                          "record")
    previous = None
    if cfg.stage != "compress":  # the base LM is the previous stage's; config.yaml and the card say which
        previous, info = _previous_stage(cfg)
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": info["base"]})})
    placement = choose_placement(cfg.model.device, cfg.model.precision)
    recipe.seed_everything(cfg.train.seed)
    clara = build_clara(cfg, placement, previous)
    module = ClaraModule(clara, cfg)
    run_dir = recipe.open_run(cfg, resume, overwrite)
    with run_logging(RunDir(run_dir).log):
        reporter.note(f"CLaRa stage {cfg.stage}: {clara.shape.doc_max_length} document tokens into "
                      f"{clara.shape.memory_tokens} memory vectors (compression {clara.shape.compress_rate}x); "
                      f"training {', '.join(TRAINS[cfg.stage])} and the memory tokens")
        reporter.note(f"data: {len(train_records)} training records, {len(eval_records)} held-out")
        book = ScoreBook()
        evaluator = ClaraEvaluator(eval_records, cfg, RunDir(run_dir).samples, book)
        base_name = cfg.init_from if cfg.stage != "compress" else cfg.model.name
        before = recipe.evaluate_before(run_dir, resume, reporter, str(base_name), "held-out",
                                        recipe.base_evaluation(evaluator, module, book), book)
        kwargs = training_kwargs(cfg.train, run_dir, placement, cfg.eval.primary_metric, show_progress=False)
        args = build_training_args(TrainingArguments, {**kwargs, "optim": cfg.train.optim,
                                                       "remove_unused_columns": False, "bf16": False, "fp16": False})
        rows = [{"documents": r.documents, "question": r.question, "answer": r.answer} for r in train_records]
        trainer = ClaraTrainer(model=module, args=args, train_dataset=datasets.Dataset.from_list(rows),
                               eval_dataset=datasets.Dataset.from_list(rows[:1]), data_collator=collate,
                               callbacks=recipe.callbacks(run_dir, cfg, reporter), evaluator=evaluator)
        train_seconds = recipe.train(trainer, run_dir, resume, reporter)
        if not is_main_process():
            return TrainResult(run_dir, None, train_seconds, len(rows))
        final, best, after = recipe.conclude(trainer, run_dir, clara.save, cfg.eval.primary_metric,
                                             lambda: evaluator(module, step=None), book)
        details = {"base model": str(clara.base_name), "stage": cfg.stage, "data": str(cfg.data.train),
                   "train records": str(len(rows)), "compression": f"{clara.shape.compress_rate}x "
                   f"({clara.shape.memory_tokens} vectors per document)",
                   "device": f"{placement.device} / weights {cfg.model.dtype}", "train time": f"{train_seconds:.1f} s"}
        comparison = recipe.finish(run_dir, cfg, before, after, final, "held-out", details,
                                   f"ragtune train clara ({cfg.stage}): {run_dir.name}", best, book=book)
        return TrainResult(run_dir, comparison, train_seconds, len(rows))
