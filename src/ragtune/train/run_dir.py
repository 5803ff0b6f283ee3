"""The run directory: creation rules, complete-checkpoint markers, and resume."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ragtune.errors import RunDirError
from ragtune.utils import write_atomic

COMPLETE = ".complete"  # written last into a checkpoint; a checkpoint without it is ignored


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
    folder = run_dir / "checkpoints"
    found = [p for p in folder.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted((p for p in found if (p / COMPLETE).is_file()), key=lambda p: int(p.name.split("-")[1]))


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint; half-written ones (killed mid-save) are removed."""
    complete = complete_checkpoints(run_dir)
    for partial in (run_dir / "checkpoints").glob("checkpoint-*"):
        if partial not in complete:
            shutil.rmtree(partial, ignore_errors=True)
    return complete[-1] if complete else None
