"""A Trainer seam: evaluation through a ragtune evaluator instead of the Trainer's loss-only loop."""

from __future__ import annotations


class EvaluatorMixin:
    """Mix into an HF Trainer subclass, which then takes `evaluator`: `evaluator(model, step)` returns the metrics
    (without prefix), as sentence-transformers' trainers take theirs."""

    def __init__(self, *args, evaluator, **kwargs):
        super().__init__(*args, **kwargs)
        self.ragtune_evaluator = evaluator

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        raw = self.ragtune_evaluator(self.model, step=self.state.global_step)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in raw.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
