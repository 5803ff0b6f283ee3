"""The ragtune error hierarchy: one root, each error also a matching builtin.

The CLI catches `RagtuneError`, prints its one-line message and exits 2.
"""

from __future__ import annotations


class RagtuneError(Exception):
    """Root of every error ragtune raises on purpose; its message is meant for users."""

    exit_code = 2


class ConfigError(RagtuneError, ValueError):
    """A config file or override is wrong: unknown key, wrong type or bad value."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = f"{where}{self.problems[0]}"
        else:
            message = f"{where}{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(message)


class DataError(RagtuneError, ValueError):
    """A data file is unreadable or malformed."""


class MissingPathError(DataError, FileNotFoundError):
    """A file or folder the command reads is not there (as HF datasets' DataFilesNotFoundError is both)."""


class ModelError(RagtuneError, OSError):
    """A model cannot be found or loaded."""


class OutputError(RagtuneError, FileExistsError):
    """An output folder or file (an index, an export, synthetic data) is in a state the command refuses to touch."""


class RunDirError(OutputError):
    """A training run directory is in a state that the command refuses to touch."""


class GeneratorError(RagtuneError, RuntimeError):
    """A generator could not produce an answer (endpoint down, bad reply, model failure)."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format a location as `file:line: field 'x'` for error messages."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field is not None:
        text += f": field '{field}'"
    return text


def missing_path(path) -> MissingPathError:
    """The error for a file or folder that is not there: a dangling or looping link says so."""
    from pathlib import Path

    path = Path(path)
    if path.is_symlink():
        return MissingPathError(f"{path}: a symbolic link that leads nowhere (its target is missing, or links loop); "
                                "point it at a real file or folder")
    return MissingPathError(f"{path}: no such file or folder; check the path (relative paths start from "
                            f"{Path.cwd()})")
