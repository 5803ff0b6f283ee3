"""Small shared helpers: atomic writes and rank detection."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _parents_are_folders(path: Path) -> None:
    from ragtune.errors import OutputError

    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise OutputError(f"{path}: {parent} is a file, so nothing can be written below it; choose another path")


def output_file(path: str | Path) -> Path:
    """`path` as a file to write; an existing folder there (or a file above it) is refused in one line, checked
    before the work."""
    from ragtune.errors import OutputError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give the path of a file to write")
    _parents_are_folders(path)
    return path


def output_folder(path: str | Path) -> Path:
    """`path` as a folder to write into; an existing file there (or above it) is refused in one line, checked
    before the work."""
    from ragtune.errors import OutputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file; give the path of a folder to write into")
    _parents_are_folders(path)
    return path


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename, so readers never see half a file."""
    path = output_file(path)
    output_folder(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: str | Path, payload: Any) -> None:
    write_atomic(path, json.dumps(payload, indent=2) + "\n")


def rank() -> int:
    """This process's global rank under torchrun/accelerate (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def world_size() -> int:
    """Processes training together under torchrun/accelerate (1 when not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def packaged_resource(name: str) -> str:
    """The path of a file or folder shipped in ragtune/resources (the embedded PubMedQA, the quickstart recipes)."""
    from importlib import resources

    return str(resources.files("ragtune") / "resources" / name)


def cache_root() -> Path:
    """RAGTUNE_CACHE, else $XDG_CACHE_HOME/ragtune, else ~/.cache/ragtune."""
    if os.environ.get("RAGTUNE_CACHE"):
        return Path(os.environ["RAGTUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ragtune"


def decode_utf8(raw: bytes, where, error=None) -> str:
    """UTF-8 text (a BOM is dropped). A bad byte raises `error` (DataError by default) that names the place as
    `where(line)` gives it, the byte, and the fix."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        from ragtune.errors import DataError

        line = raw[: exc.start].count(b"\n") + 1
        raise (error or DataError)(f"{where(line)}: not UTF-8 (byte 0x{raw[exc.start]:02x}); re-save the file as "
                                   "UTF-8") from None
