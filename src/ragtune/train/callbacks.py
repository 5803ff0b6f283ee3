"""Trainer callbacks: metrics.jsonl, progress.json and complete-checkpoint markers, on the main process only."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from ragtune.run_dir import RunDir, mark_complete
from ragtune.utils import write_json


class RunLogCallback(TrainerCallback):
    """Append every log/eval to metrics.jsonl and keep progress.json current (step, total, ETA, best)."""

    def __init__(self, run_dir: Path, primary_metric: str):
        self.run_dir = RunDir(run_dir)
        self.primary_key = f"eval_{primary_metric}"
        self.primary_metric = primary_metric
        self.start = time.time()
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.time(), state.global_step
        self._progress(state, "training")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": round(time.time(), 3),
                  **logs}
        with open(self.run_dir.metrics, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        self._progress(state, "training")

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint)

    def on_train_end(self, args, state, control, **kwargs):
        self._progress(state, "trained")

    def _best(self, state) -> dict | None:
        values = [(h[self.primary_key], h["step"]) for h in state.log_history if self.primary_key in h]
        if not values:
            return None
        from ragtune.eval.report import greater_is_better

        value, step = (max if greater_is_better(self.primary_metric) else min)(values)
        return {"metric": self.primary_metric, "value": value, "step": step}

    def _progress(self, state, status: str) -> None:
        if not state.is_world_process_zero:
            return
        done = state.global_step - self.start_step
        elapsed = time.time() - self.start
        left = max(0, state.max_steps - state.global_step)
        eta = elapsed / done * left if done else None
        write_json(self.run_dir.progress, {
            "state": status, "step": state.global_step, "total": state.max_steps,
            "elapsed_s": round(elapsed, 1), "eta_s": round(eta, 1) if eta is not None else None,
            "best": self._best(state),
        })


class EvaluateAtEndCallback(TrainerCallback):
    """Evaluate and checkpoint at the last step too, so the best-checkpoint choice sees the final weights."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_evaluate = True
            control.should_save = True
        return control
