"""Merge a LoRA/QLoRA adapter into its base model and write a plain transformers directory (vLLM loads it too).

The base is always loaded unquantized (its own dtype, or the one asked for): a QLoRA adapter is merged into
bf16/fp16 weights, never into 4-bit ones, which would bake quantization error into the merged model.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from ragtune.errors import ModelError, OutputError
from ragtune.models.resolve import resolve_model
from ragtune.run_dir import RunDir
from ragtune.train.model_card import write_merged_card

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def find_adapter(source: str | Path) -> Path:
    """A run directory (its final/) or an adapter folder; either must hold adapter_config.json."""
    source = Path(source)
    for candidate in (source, RunDir(source).final):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    if (RunDir(source).final / "config.json").is_file() or (source / "config.json").is_file():
        raise ModelError(f"{source}: holds a full model, not a LoRA adapter; there is nothing to merge, load it "
                         "directly")
    raise ModelError(f"{source}: no adapter_config.json here or in final/; give a ragtune run directory or a PEFT "
                     "adapter folder")


def _base_dtype(base_path: str, dtype: str) -> torch.dtype:
    if dtype != "auto":
        return DTYPES[dtype]
    config = json.loads((Path(base_path) / "config.json").read_text(encoding="utf-8")) \
        if (Path(base_path) / "config.json").is_file() else {}
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)


def merge_adapter(source: str | Path, out: str | Path, dtype: str = "auto", overwrite: bool = False) -> Path:
    """Write base + adapter, merged, to `out` (safetensors, tokenizer with its chat template, generation config)."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    adapter = find_adapter(source)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out}: exists; pass --overwrite to replace it or choose another --out")
    peft_config = PeftConfig.from_pretrained(str(adapter))
    base_path = resolve_model(peft_config.base_model_name_or_path)
    seq2seq = str(peft_config.task_type) in ("SEQ_2_SEQ_LM", "TaskType.SEQ_2_SEQ_LM")
    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    base = loader.from_pretrained(base_path, dtype=_base_dtype(base_path, dtype), use_safetensors=True,
                                  trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    if len(tokenizer) != base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))  # tokens added during training
    model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    write_merged_card(out, adapter, peft_config.base_model_name_or_path, seq2seq)
    log.info("merged %s into %s -> %s", adapter, base_path, out)
    return out
