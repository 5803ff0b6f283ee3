"""The evaluation an export must pass: the run's own held-out split, or a BEIR collection for a bare model."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ragtune.errors import ModelError

KINDS = ("embed", "rerank")
CALIBRATION_SIZE = 300  # texts or pairs that set a static int8 model's activation ranges


@dataclass
class Gate:
    """`evaluate(model, placement)` -> metrics over `units` texts (embedder) or pairs (cross-encoder); `warm(model,
    placement)` runs one small batch first, so that one-time costs stay out of the timing."""

    evaluate: Callable
    warm: Callable
    units: int
    unit: str  # texts | pairs
    primary_metric: str
    split: str
    calibrate: Callable[[], tuple[list, str]] | None = None  # calibration_data() for this gate, when asked


def calibration_data(kind: str, train, ir, seed: int = 0) -> tuple[list, str]:
    """Up to CALIBRATION_SIZE inputs for static quantization, and where they came from: the run's training examples
    (`train`, any format: queries with their positives and negatives, or scored pairs), or else documents of the
    collection that the evaluated split never judges, so that calibration sees nothing the gate scores. A bare
    cross-encoder has no queries outside the split: it is calibrated on pairs of such documents, the first words of
    one standing for a query."""
    from ragtune.data.embed import example_documents, query_and_relevant

    rng = random.Random(seed)
    if train is not None and train.rows:
        inputs, used = [], 0
        for row in rng.sample(train.rows, len(train.rows)):
            query = query_and_relevant(row, train.format)[0]
            docs = example_documents(row, train.format)
            inputs += [query, *docs] if kind == "embed" else [(query, doc) for doc in docs]
            used += 1
            if len(inputs) >= CALIBRATION_SIZE:
                break
        what = "texts" if kind == "embed" else "(query, passage) pairs"
        return inputs[:CALIBRATION_SIZE], f"{what} from {used} training examples"
    judged = {doc for docs in ir.qrels.values() for doc in docs}
    free = [text for doc, text in ir.corpus.items() if doc not in judged]
    which = "that its qrels do not judge" if free else "(its qrels judge every one, so the gate's documents)"
    free = free or list(ir.corpus.values())
    docs = rng.sample(free, min(len(free), CALIBRATION_SIZE))
    if kind == "embed":
        return docs, f"documents of {ir.name} {which}"
    pseudo = [" ".join(doc.split()[:12]) for doc in docs[1:] + docs[:1]]
    return list(zip(pseudo, docs)), f"pairs of documents of {ir.name} {which}, the first words of one as the query"


def retrieval_gate(ir, eval_cfg, prompts=None) -> Gate:
    """Exact dense retrieval over the split with the model, as `train embed` evaluates."""
    from ragtune.eval.retrieval import evaluate_model
    from ragtune.retrieval.dense import encode

    sample = list(ir.corpus.values())[:16]
    return Gate(lambda model, placement: evaluate_model(model, ir, eval_cfg, placement, prompts).metrics,
                lambda model, placement: encode(model, sample, placement), len(ir.corpus) + len(ir.queries), "texts",
                eval_cfg.primary_metric, ir.name)


def rerank_gate(ir, eval_cfg) -> Gate:
    """The split's first stage (computed once, in torch fp32) reranked by the model, as `train rerank` evaluates."""
    from ragtune.eval.metrics import mean_scores
    from ragtune.eval.rerank import Candidates, second_stage
    from ragtune.models.device import choose_placement

    candidates = Candidates.build(ir, eval_cfg, choose_placement("cpu", "fp32"))
    pairs = sum(min(len(hits), eval_cfg.rerank_k) for hits in candidates.hits)
    query = ir.queries[candidates.query_ids[0]]
    sample = [ir.corpus[d] for d, _ in candidates.hits[0][:8]]

    def warm(model, placement):
        second_stage(model, eval_cfg, placement).score(query, sample)

    def evaluate(model, placement) -> dict[str, float]:
        return mean_scores(candidates.reranked_scores(model, eval_cfg, placement))

    return Gate(evaluate, warm, pairs, "pairs", eval_cfg.primary_metric, ir.name)


def gate_for(source: Path, eval_dir: Path | None, split: str) -> tuple[Path, str, Callable[[], Gate]]:
    """The model folder to export, its kind, and how to build its gate: a run directory's final/ judged on the run's
    own evaluation split (its config.yaml), or any saved model judged on `eval_dir`, a BEIR collection's `split`
    (which also overrides a run's own split)."""
    from ragtune.config.load import load_config, recorded_task
    from ragtune.models.load import is_cross_encoder_dir, is_multivector_dir
    from ragtune.models.resolve import resolve_model
    from ragtune.run_dir import RunDir

    run = RunDir(source)
    task = recorded_task(run.config) if run.config.is_file() else None
    if task is not None and task not in KINDS:
        raise ModelError(f"{source}: a '{task}' run; ONNX and OpenVINO exports cover embedders (train embed) and "
                         "cross-encoders (train rerank)")
    folder = run.final if task else Path(resolve_model(str(source)))
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no saved model here (no config.json); give a finished ragtune run or a model "
                         "folder")
    if is_multivector_dir(str(folder)):
        raise ModelError(f"{source}: a late-interaction model; ONNX and OpenVINO exports cover embedders and "
                         "cross-encoders")
    kind = task or ("rerank" if is_cross_encoder_dir(str(folder)) else "embed")
    if eval_dir is None and task is None:
        raise ModelError(f"{source}: not a ragtune run, so it has no evaluation split of its own; give --eval "
                         "BEIR_DIR (and --split) to gate the export on")

    def build() -> Gate:
        if eval_dir is not None:
            from ragtune.config.rerank import RerankEvalSection
            from ragtune.config.schema import EvalSection
            from ragtune.data.beir import load_beir

            ir, train = load_beir(eval_dir, split), None
            gate = retrieval_gate(ir, EvalSection()) if kind == "embed" else rerank_gate(ir, RerankEvalSection())
        else:
            from ragtune.data.embed import load_embed_data

            cfg = load_config(task, run.config)
            data = load_embed_data(cfg.data, cfg.train.seed)
            ir, train = data.eval, data.train
            gate = retrieval_gate(ir, cfg.eval, cfg.prompts) if kind == "embed" else rerank_gate(ir, cfg.eval)
        gate.calibrate = lambda: calibration_data(kind, train, ir)
        return gate

    return folder, kind, build
