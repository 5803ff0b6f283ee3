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
    """A data file is missing, unreadable or malformed."""


class ModelError(RagtuneError, OSError):
    """A model cannot be found or loaded."""


class RunDirError(RagtuneError, FileExistsError):
    """The run directory is in a state that the command refuses to touch."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format a location as `file:line: field 'x'` for error messages."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field is not None:
        text += f": field '{field}'"
    return text


def missing_path(path) -> DataError:
    """The error for a file or folder that is not there: a dangling or looping link says so."""
    from pathlib import Path

    path = Path(path)
    if path.is_symlink():
        return DataError(f"{path}: a symbolic link that leads nowhere (its target is missing, or links loop); point "
                         "it at a real file or folder")
    return DataError(f"{path}: no such file or folder; check the path (relative paths start from {Path.cwd()})")
