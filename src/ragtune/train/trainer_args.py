"""Map a ragtune TrainSection onto HF/sentence-transformers TrainingArguments (shared by every recipe)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import transformers

from ragtune.config.schema import TrainSection
from ragtune.errors import ConfigError
from ragtune.eval.report import greater_is_better
from ragtune.models.device import Placement
from ragtune.run_dir import RunDir
from ragtune.train.trackers import PROJECT, run_name


def training_kwargs(train: TrainSection, run_dir: Path, placement: Placement, primary_metric: str,
                    show_progress: bool) -> dict[str, Any]:
    """Keyword arguments for a TrainingArguments class, with best-checkpoint selection on `primary_metric`."""
    kwargs: dict[str, Any] = {
        "output_dir": str(RunDir(run_dir).checkpoints),
        "num_train_epochs": train.num_train_epochs,
        "max_steps": train.max_steps,
        "per_device_train_batch_size": train.per_device_train_batch_size,
        "learning_rate": train.learning_rate,
        "weight_decay": train.weight_decay,
        "lr_scheduler_type": train.lr_scheduler_type,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "eval_strategy": "steps",
        "eval_steps": train.eval_steps,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": train.save_total_limit,
        "logging_steps": train.logging_steps,
        "seed": train.seed,
        "load_best_model_at_end": True,
        "metric_for_best_model": f"eval_{primary_metric}",
        "greater_is_better": greater_is_better(primary_metric),
        "report_to": train.report_to or "none",
        "dataloader_num_workers": train.dataloader_num_workers,
        "disable_tqdm": not show_progress,
        "bf16": placement.precision == "bf16",
        "fp16": placement.precision == "fp16",
        "use_cpu": placement.device == "cpu",
        "save_only_model": False,
    }
    fields = transformers.TrainingArguments.__dataclass_fields__  # names moved between transformers releases
    # a float below 1 in warmup_steps is a ratio where warmup_ratio is gone
    kwargs["warmup_ratio" if "warmup_ratio" in fields else "warmup_steps"] = train.warmup_ratio
    kwargs["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = \
        train.gradient_checkpointing
    kwargs["run_name"] = run_name(run_dir)  # the trackers' run name
    if "project" in fields:
        kwargs["project"] = PROJECT  # Trackio's project
    if "wandb" in train.report_to:
        os.environ.setdefault("WANDB_PROJECT", PROJECT)
    if "logging_dir" in fields:
        kwargs["logging_dir"] = str(RunDir(run_dir).tensorboard)
    else:  # newer releases read the TensorBoard folder from the environment only
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(RunDir(run_dir).tensorboard)
    clash = sorted(set(train.extra) & set(kwargs) - {"report_to", "run_name", "project"})
    if clash:
        raise ConfigError(f"train.extra sets {clash}, which ragtune sets from its own keys; set train.{clash[0]} "
                          "directly (or output.dir for output_dir)")
    kwargs.update(train.extra)
    return kwargs


def build_training_args(cls, kwargs: dict[str, Any]):
    """Instantiate `cls(**kwargs)`; an unknown train.extra key becomes a ConfigError, not a TypeError."""
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"train.extra: {exc}; use TrainingArguments names") from None
    except ValueError as exc:
        raise ConfigError(f"train: {str(exc).splitlines()[0]}") from None
