"""The run directory: its layout, creation rules, complete-checkpoint markers, and resume.

`RunDir` is the one place that spells the layout of a training run:

    RUN/config.yaml        the resolved config, `task:` first
    RUN/eval_before.json   the base model on the held-out split
    RUN/eval_after.json    the tuned model on the same split
    RUN/summary.md         the before/after table and the verdict
    RUN/report.html        the curves, the before/after and the model's views, in one page
    RUN/metrics.jsonl      every log and evaluation, one JSON object a line
    RUN/progress.json      step, total, ETA and best, kept current
    RUN/samples.jsonl      fixed eval prompts answered at each evaluation (generators)
    RUN/train.log          the run's log
    RUN/checkpoints/       the trainer's checkpoints, each marked complete when its save finished
    RUN/final/             the model to use (or the adapter, with its card)
    RUN/tensorboard/       TensorBoard logs, when report_to asks for them
    RUN/trials/, auto.json `train embed --recipe auto`: one run per trial, and what was tried
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ragtune.errors import RunDirError
from ragtune.utils import write_atomic

COMPLETE = ".complete"  # written last into a checkpoint; a checkpoint without it is ignored


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def eval_before(self) -> Path:
        return self.path / "eval_before.json"

    @property
    def eval_after(self) -> Path:
        return self.path / "eval_after.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.md"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def progress(self) -> Path:
        return self.path / "progress.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def trials(self) -> Path:
        """`train embed --recipe auto`: one run directory per trial, and auto.json on what was tried."""
        return self.path / "trials"

    @property
    def auto(self) -> Path:
        return self.path / "auto.json"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def final_staging(self) -> Path:
        return self.path / ".final.tmp"

    def is_run(self) -> bool:
        """A finished (or resumable) run: its config and a final model are there."""
        return self.config.is_file() and self.final.is_dir()


def prepare_run_dir(path: str | Path, resume: bool, overwrite: bool) -> Path:
    """Create the run directory; refuse to clobber an existing one unless told to resume or overwrite."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: output.dir is an existing file, not a folder; set output.dir to a folder")
    exists = path.exists() and any(path.iterdir())
    if resume:
        if not exists:
            raise RunDirError(f"{path}: nothing to resume (no run there); drop --resume to start a new run")
        return path
    if exists:
        if not overwrite:
            raise RunDirError(f"{path}: run directory exists; pass --overwrite to replace it, --resume to continue "
                              "it, or set output.dir to a new folder")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mark_complete(checkpoint: Path) -> None:
    write_atomic(checkpoint / COMPLETE, "")


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints whose save finished, oldest first."""
    folder = RunDir(run_dir).checkpoints
    found = [p for p in folder.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted((p for p in found if (p / COMPLETE).is_file()), key=lambda p: int(p.name.split("-")[1]))


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint; half-written ones (killed mid-save) are removed."""
    complete = complete_checkpoints(run_dir)
    for partial in RunDir(run_dir).checkpoints.glob("checkpoint-*"):
        if partial not in complete:
            shutil.rmtree(partial, ignore_errors=True)
    return complete[-1] if complete else None
