"""`ragtune train embed --recipe auto [--budget 20m]`: try a few settings on the dev split, keep the winner.

Each trial is an ordinary embed run in RUN/trials/NAME (same seed, so the same dev split and data order), tried in
order while the budget lasts. The winner is the trial whose best checkpoint scores highest on the dev split; a trial
whose final/ is its base model counts as the base. The winner's final/ is copied to RUN/final, and RUN/auto.json
records every trial, what it scored, what it cost and why the winner won.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ragtune.config import EmbedConfig, dump_config
from ragtune.errors import ConfigError, RagtuneError
from ragtune.eval.report import paired_comparison, summary_markdown
from ragtune.progress import Reporter
from ragtune.run_dir import RunDir, prepare_run_dir
from ragtune.train.recipe import TrainResult
from ragtune.train.trackers import check_installed
from ragtune.utils import write_atomic, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    name: str
    lr_factor: float  # times the configured learning rate
    mining: bool  # keep the configured hard-negative mining (the default mines); False turns it off


# Tried in this order, the configuration as given first, so that a short budget still trains it.
TRIALS = (Trial("as configured", 1.0, True), Trial("lr x2.5", 2.5, True), Trial("no mining", 1.0, False),
          Trial("lr x2.5, no mining", 2.5, False))


def parse_budget(text: str | None) -> float | None:
    """Seconds from '20m', '90s', '1.5h' or a plain number of seconds; None for no limit."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--budget '{text}' is not a duration; give e.g. 20m, 90s or 1.5h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def trial_config(cfg: EmbedConfig, trial: Trial, run_dir: Path) -> EmbedConfig:
    trial_cfg = cfg.model_copy(deep=True)
    trial_cfg.train.learning_rate = cfg.train.learning_rate * trial.lr_factor
    if not trial.mining:
        trial_cfg.data.hard_negatives = None
    trial_cfg.output.dir = str(RunDir(run_dir).trials / re.sub(r"\W+", "_", trial.name))
    return trial_cfg


def _run_trial(cfg: EmbedConfig, resume: bool, reporter: Reporter) -> dict:
    """Train one trial (or read back a finished one on --resume); its dev figures and cost."""
    from ragtune.train.embed import train_embed

    run_dir = Path(cfg.output.dir)
    start = time.perf_counter()
    if not (resume and RunDir(run_dir).eval_after.is_file()):
        train_embed(cfg, resume=resume and run_dir.is_dir(), overwrite=True, reporter=reporter)
    after = json.loads(RunDir(run_dir).eval_after.read_text(encoding="utf-8"))
    before = json.loads(RunDir(run_dir).eval_before.read_text(encoding="utf-8"))["metrics"]
    return {"run_dir": str(run_dir), "learning_rate": cfg.train.learning_rate,
            "hard_negatives": cfg.data.hard_negatives is not None, "before": before, "after": after["metrics"],
            "kept_base": after.get("kept_base", False), "seconds": round(time.perf_counter() - start, 1)}


def _per_example(path: Path) -> dict | None:
    """A trial's per-example scores (for the paired test), as its eval_before/after.json kept them."""
    return json.loads(path.read_text(encoding="utf-8")).get("per_example")


def train_embed_auto(cfg: EmbedConfig, budget: float | None = None, resume: bool = False, overwrite: bool = False,
                     reporter: Reporter | None = None) -> TrainResult:
    """Try TRIALS in order within `budget` seconds (the first always runs), and make the best on dev the run's
    final/."""
    reporter = reporter or Reporter()
    run_dir = Path(cfg.output.dir)
    check_installed(cfg.train.report_to)
    prepare_run_dir(run_dir, resume, overwrite)
    write_atomic(RunDir(run_dir).config, dump_config(cfg))
    metric, start, done, skipped = cfg.eval.primary_metric, time.perf_counter(), {}, []
    for trial in TRIALS:
        spent = time.perf_counter() - start
        longest = max((r["seconds"] for r in done.values() if "seconds" in r), default=0.0)
        if done and budget is not None and spent + longest > budget:
            skipped.append(trial.name)
            continue
        trial_cfg = trial_config(cfg, trial, run_dir)
        reporter.note(f"recipe auto: trial '{trial.name}' (lr {trial_cfg.train.learning_rate:g}, hard negatives "
                      f"{'on' if trial_cfg.data.hard_negatives else 'off'})")
        try:
            done[trial.name] = _run_trial(trial_cfg, resume, reporter)
        except RagtuneError as exc:  # e.g. mining that keeps nothing: this trial fails, the others may not
            if not done:  # the configuration as given failed: nothing to compare against
                raise
            done[trial.name] = {"error": str(exc)}
            log.warning("recipe auto: trial '%s' failed: %s", trial.name, exc)
    finished = {name: r for name, r in done.items() if "after" in r}
    tuned = {name: r for name, r in finished.items() if not r["kept_base"]}
    winner = max(tuned, key=lambda n: tuned[n]["after"][metric]) if tuned else None
    first = next(iter(finished.values()))
    before = first["before"]
    chosen = finished[winner] if winner else first
    if winner:
        why = (f"'{winner}' scored the highest dev {metric} ({chosen['after'][metric]:.4f}; base "
               f"{before[metric]:.4f}) of {len(finished)} trials")
    else:
        why = f"no trial beat the base model on dev {metric} ({before[metric]:.4f}): final/ is the base model"
    shutil.rmtree(RunDir(run_dir).final, ignore_errors=True)
    shutil.copytree(RunDir(chosen["run_dir"]).final, RunDir(run_dir).final)
    reporter.note(f"recipe auto: {why}" + (f"; over budget, not tried: {', '.join(skipped)}" if skipped else ""))
    write_json(RunDir(run_dir).auto, {"budget_s": budget, "spent_s": round(time.perf_counter() - start, 1),
                                       "primary_metric": metric, "winner": winner, "why": why, "trials": done,
                                       "skipped_over_budget": skipped})
    scored = chosen if winner else max(finished.values(), key=lambda r: r["after"][metric])
    after = scored["after"]
    before_scores, after_scores = _per_example(RunDir(first["run_dir"]).eval_before), \
        _per_example(RunDir(scored["run_dir"]).eval_after)
    write_json(RunDir(run_dir).eval_before, {"model": cfg.model.name, "split": "dev", "metrics": before,
                                              "per_example": before_scores})
    write_json(RunDir(run_dir).eval_after, {"model": str(RunDir(run_dir).final), "split": "dev", "metrics": after,
                                             "trial": winner, "kept_base": winner is None,
                                             "per_example": after_scores})
    comparison = paired_comparison(metric, before, after, winner is None, before_scores, after_scores)
    details = {"model": cfg.model.name, "data": str(cfg.data.train), "recipe": "auto", "winner": winner or "base",
               "why": why, **{f"trial {n}": (f"dev {r['after'][metric]:.4f}, {r['seconds']:.0f} s" if "after" in r
                                              else r["error"]) for n, r in done.items()}}
    write_atomic(RunDir(run_dir).summary, summary_markdown(comparison, f"ragtune train embed --recipe auto: "
                                                                      f"{run_dir.name}", details))
    if cfg.train.report_to:  # each trial logged its own run; this one holds the comparison the user acts on
        from ragtune.train.trackers import log_summary

        log_summary(cfg.train, run_dir, comparison, None, dump_config(cfg), own_run=True,
                    notes={"ragtune/recipe": "auto", "ragtune/winner": winner or "base", "ragtune/why": why})
    seconds = sum(r.get("seconds", 0.0) for r in done.values())
    return TrainResult(run_dir, comparison, seconds, 0)
