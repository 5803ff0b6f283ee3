"""Load generator models (causal LM or seq2seq) for full, LoRA or QLoRA training, and check LoRA targets.

Weights load from safetensors only and remote code is never trusted. QLoRA is refused before anything loads
where there is no CUDA or no bitsandbytes.
"""

from __future__ import annotations

import logging

import torch

from ragtune.config.generate import LoraSection
from ragtune.errors import ConfigError, ModelError
from ragtune.models.device import Placement
from ragtune.models.resolve import PACKAGED_GENERATORS, resolve_model

log = logging.getLogger(__name__)


def check_method(method: str) -> None:
    """QLoRA needs CUDA and bitsandbytes; say so before any weights load."""
    if method != "qlora":
        return
    if not torch.cuda.is_available():
        raise ConfigError("method=qlora needs a CUDA GPU (4-bit NF4 weights through bitsandbytes) and none is "
                          "available here; use method=lora (same adapters, 16/32-bit base weights)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("method=qlora needs bitsandbytes; run `pip install 'ragtune[qlora]'` or use method=lora") from None


def weight_dtype(dtype: str, placement: Placement) -> torch.dtype:
    """auto: bf16/fp16 on CUDA (as the placement chose), fp32 elsewhere (CPU bf16 runs as autocast)."""
    if dtype != "auto":
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    return placement.dtype if placement.device == "cuda" else torch.float32


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for a broken folder
        raise ModelError(f"tokenizer of '{name}' could not be loaded from {path} ({_first_line(exc)}); check the "
                         "model folder (tokenizer.json or tokenizer_config.json)") from None
    return tokenizer


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_generator(name: str, placement: Placement, method: str = "full", dtype: str = "auto",
                   seq2seq: bool = False, attn_implementation: str | None = None):
    """The model to fine-tune, on its device; 4-bit NF4 with double quantization for QLoRA."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    check_method(method)
    path = resolve_model(name)
    kwargs = {"dtype": weight_dtype(dtype, placement), "use_safetensors": True, "trust_remote_code": False}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=placement.dtype if placement.precision != "fp32" else torch.bfloat16)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    _check_architecture(name, path, seq2seq)
    try:
        model = loader.from_pretrained(path, **kwargs)
    except Exception as exc:  # transformers raises many types for a broken or mismatched folder
        kind = "seq2seq (encoder-decoder)" if seq2seq else "causal LM"
        raise ModelError(f"model '{name}' could not be loaded as a {kind} from {path} ({_first_line(exc)}); check "
                         "that it is a transformers model directory with safetensors weights") from None
    if path != name and name in PACKAGED_GENERATORS:  # adapters record the model id, which loads anywhere
        model.name_or_path = model.config._name_or_path = name
    if method != "qlora":
        model.to(placement.device)
    return model


def _check_architecture(name: str, path: str, seq2seq: bool) -> None:
    """Refuse an encoder-only checkpoint (BERT, a sentence-transformers model) before it loads as a generator."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    if not config.is_file():
        return
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    markers = ("ForConditionalGeneration", "Seq2Seq", "MTModel") if seq2seq else ("CausalLM", "LMHead",
                                                                                  "ForConditionalGeneration")
    if architectures and not any(m in a for a in architectures for m in markers):
        kind = "seq2seq (encoder-decoder)" if seq2seq else "causal LM"
        raise ModelError(f"model '{name}' is a {', '.join(architectures)}, not a {kind}; give a generator "
                         f"checkpoint (e.g. {'t5-small' if seq2seq else 'Qwen/Qwen2.5-0.5B-Instruct'})")


def check_max_length(model, max_length: int) -> None:
    """A sequence longer than the model's position table fails mid-training; say so before it starts."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        raise ConfigError(f"max_length={max_length} exceeds the model's {limit} positions; set max_length<={limit}")


def linear_module_names(model) -> list[str]:
    """The distinct leaf names of the model's linear layers (what LoRA can target), without the output head."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")}
    return sorted(names - {"lm_head"})


def apply_lora(model, lora: LoraSection, method: str, new_token_ids: list[int] | None = None,
               gradient_checkpointing: bool = False, seq2seq: bool = False):
    """Wrap `model` in PEFT LoRA adapters (DoRA/rsLoRA optional); new tokens' embeddings are trained too."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    available = linear_module_names(model)
    if lora.target_modules != "all-linear":
        missing = [m for m in lora.target_modules if m not in available]
        if missing:
            raise ConfigError(f"lora.target_modules: {missing} not found in the model; its linear modules are "
                              f"{available} (or use all-linear)")
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, use_dora=lora.use_dora, use_rslora=lora.use_rslora,
                        task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
                        trainable_token_indices=new_token_ids or None)
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA r=%d on %s: %s of %s parameters trainable (%.2f%%)", lora.r, lora.target_modules,
             f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))
    return model


def chat_prompt(tokenizer, context) -> str:
    """The text a causal LM continues: a chat rendered with the generation prompt, or a raw prompt as is."""
    if isinstance(context, list):
        return tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
    return context


@torch.inference_mode()
def generate_text(model, tokenizer, prompts: list[str], max_new_tokens: int, stop_ids: list[int] | None = None,
                  batch_size: int = 8, first_step: list | None = None, **generate_kwargs) -> list[str]:
    """Greedy continuations of `prompts` (left-padded batches), without the prompt and special tokens. With
    `first_step` (a list), the log-probabilities of the first generated token, (vocabulary,) per prompt, are
    appended to it: the same forward pass that starts each answer scores the labels it could start with."""
    model.eval()
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    bos = tokenizer.bos_token
    answers = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            add_special = not (bos and batch[0].startswith(bos))
            encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=add_special).to(device)
            encoded.pop("token_type_ids", None)
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=stop_ids or tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True,
                                    output_logits=first_step is not None, **generate_kwargs)
            if first_step is not None:
                first_step += list(torch.log_softmax(output.logits[0].float(), dim=-1).cpu())
            output = output.sequences
            # A decoder-only model returns prompt + continuation; an encoder-decoder only the decoder's tokens.
            new = output if model.config.is_encoder_decoder else output[:, encoded["input_ids"].shape[1]:]
            answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return answers


def label_first_tokens(tokenizer, labels: list[str]) -> dict[str, list[int]] | None:
    """The token ids an answer can start each label with (as written, capitalised, after a space); None when two
    labels share a start, so that likelihood cannot tell them apart (labels are then read from the text)."""
    starts, owner = {}, {}
    for label in labels:
        ids = set()
        for form in {label, label.capitalize(), " " + label, " " + label.capitalize()}:
            tokens = tokenizer(form, add_special_tokens=False)["input_ids"]
            if tokens and tokenizer.decode(tokens[:1]).strip():  # a bare-space first token says nothing
                ids.add(tokens[0])
        clash = next((owner[i] for i in ids if owner.setdefault(i, label) != label), None)
        if clash:
            log.warning("labels %s and %s start with the same token; reading labels from the answer text instead",
                        clash, label)
            return None
        starts[label] = sorted(ids)
    return starts


def load_for_inference(name: str, placement: Placement, seq2seq: bool = False):
    """A model ready to generate: a plain model folder or hub id, or a PEFT adapter on top of its base."""
    from pathlib import Path

    path = Path(name)
    if (path / "adapter_config.json").is_file():
        from peft import PeftConfig, PeftModel

        base_name = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        base = load_generator(base_name, placement, "full", seq2seq=seq2seq)
        tokenizer = load_tokenizer(str(path))
        if len(tokenizer) != base.get_input_embeddings().weight.shape[0]:
            base.resize_token_embeddings(len(tokenizer))
        # Merged into the base weights: inference runs at the base model's speed.
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload().eval(), tokenizer
    return load_generator(name, placement, "full", seq2seq=seq2seq).eval(), load_tokenizer(name)


def prepare_chat(model, tokenizer, template: str = "auto", extra_tokens: list[str] | None = None):
    """Set the chat template (adding its tokens and resizing the embeddings where needed); return (template used,
    tokens added, stop token ids)."""
    from ragtune.models.templates import setup_template, stop_token_ids

    used, added = setup_template(tokenizer, template, extra_tokens)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return used, added, stop_token_ids(tokenizer, used)
