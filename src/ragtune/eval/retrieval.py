"""Retrieval evaluation: score pipelines on a held-out IR collection, side by side.

A pipeline spec names what retrieves: `dense:MODEL` today; the retrieval stack adds bm25, hybrid and rerank.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragtune.config.schema import EvalSection, PromptsSection
from ragtune.data.beir import IRData
from ragtune.eval.metrics import ir_metrics
from ragtune.models.device import Placement
from ragtune.retrieval.dense import dense_run
from ragtune.errors import ConfigError
from ragtune.utils import write_atomic

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    name: str
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    queries: int = 0
    documents: int = 0


def evaluate_model(model, ir: IRData, cfg: EvalSection, placement: Placement,
                   prompts: PromptsSection | None = None, show_progress: bool = False) -> PipelineResult:
    """Dense retrieval with `model` over the whole corpus, scored with every configured IR metric."""
    prompts = prompts or PromptsSection()
    run, timings = dense_run(model, ir.corpus, ir.queries, placement, k=max(cfg.ks), batch_size=cfg.batch_size,
                             query_prompt=prompts.query, document_prompt=prompts.document,
                             show_progress=show_progress)
    return PipelineResult("dense", ir_metrics(ir.qrels, run, cfg.metrics, cfg.ks), timings, len(ir.queries),
                          len(ir.corpus))


def parse_pipeline(spec: str) -> tuple[str, str]:
    """Split `kind:arg`; only the kinds implemented so far are accepted."""
    kind, _, arg = spec.partition(":")
    if kind != "dense" or not arg:
        raise ConfigError(f"--pipeline '{spec}': unknown pipeline; use dense:MODEL "
                          "(e.g. dense:sentence-transformers/all-MiniLM-L6-v2 or dense:runs/my-run/final)")
    return kind, arg


def evaluate_pipelines(ir: IRData, specs: list[str], cfg: EvalSection, device: str = "auto",
                       precision: str = "auto", prompts: PromptsSection | None = None,
                       show_progress: bool = False) -> list[PipelineResult]:
    """Evaluate every pipeline spec on the same collection, in order."""
    from ragtune.models.device import choose_placement
    from ragtune.models.load import load_embedder

    parsed = [parse_pipeline(spec) for spec in specs]  # fail on a bad spec before loading anything
    placement = choose_placement(device, precision)
    results = []
    for spec, (_, model_name) in zip(specs, parsed):
        model = load_embedder(model_name, placement)
        result = evaluate_model(model, ir, cfg, placement, prompts, show_progress)
        result.name = spec
        results.append(result)
    return results


def results_markdown(results: list[PipelineResult], metric_names: list[str]) -> str:
    header = "| pipeline | " + " | ".join(metric_names) + " | index s | ms/query |"
    lines = [header, "|" + "---|" * (len(metric_names) + 3)]
    for r in results:
        cells = [f"{r.metrics.get(m, float('nan')):.4f}" for m in metric_names]
        lines.append(f"| {r.name} | " + " | ".join(cells) +
                     f" | {r.timings.get('index_build_s', 0):.1f} | {r.timings.get('query_ms_per_query', 0):.2f} |")
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | Path, results: list[PipelineResult], dataset: str,
                  headline: list[str]) -> Path:
    """Write results.json (the shape scripts rely on) and results.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"dataset": dataset, "pipelines": [asdict(r) for r in results]}
    write_atomic(out / "results.json", json.dumps(payload, indent=2))
    write_atomic(out / "results.md", results_markdown(results, headline))
    return out / "results.json"


def ir_evaluator(ir: IRData, cfg: EvalSection, placement: Placement, prompts: PromptsSection | None = None):
    """A sentence-transformers evaluator that runs `evaluate_model`, for best-checkpoint selection in training."""
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class IREvaluator(BaseEvaluator):
        def __init__(self):
            super().__init__()
            self.primary_metric = cfg.primary_metric
            self.greater_is_better = True

        def __call__(self, model, output_path=None, epoch=-1, steps=-1):
            result = evaluate_model(model, ir, cfg, placement, prompts)
            log.info("evaluation at step %s: %s=%.4f", steps, cfg.primary_metric, result.metrics[cfg.primary_metric])
            return result.metrics

        def get_config_dict(self):
            return {"collection": ir.name, "queries": len(ir.queries), "documents": len(ir.corpus)}

    return IREvaluator()
