"""SFT throughput: `ragtune train llm` defaults against a plain TRL SFTTrainer with default arguments.

Same randomly initialised Llama-architecture model (built from config), same Alpaca records, same batch size, same
method (full / LoRA / QLoRA). The plain run gets TRL's defaults (prompt/completion data, padded batches); ragtune
runs its own defaults (answer-only masks, best-fit-decreasing packing, padding-free batches). Throughput counts
real (non-pad) tokens through the model between the end of the first step and the end of the last. MFU uses the
6 x parameters x tokens/s convention against the GPU's dense bf16 peak.

`--size smollm2` trains the real packaged SmolLM2-135M-Instruct (dequantized from its GGUF) instead of a random
model of a given shape.

Run:  python -m benchmarks.sft_throughput --size tiny --method lora          # this CPU
      python -m benchmarks.sft_throughput --size smollm2 --method lora       # the real 135M model, any machine
      python -m benchmarks.sft_throughput --size 1b --method lora qlora      # a CUDA GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from benchmarks.common import StepTimer, TimedReporter, write_result

ALPACA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_subset_5k" / "alpaca_5000.json"
SIZES = {  # Llama-architecture shapes
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab=8000),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab=32000),  # the TinyLlama-1.1B shape
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def alpaca_prompt(record: dict) -> str:
    extra = f"\n\n{record['input']}" if record.get("input") else ""
    return f"### Instruction:\n{record['instruction']}{extra}\n\n### Response:\n"


def build_model(folder: Path, size: str, records: list[dict]) -> int:
    """A random-weight Llama of `size` with a BPE tokenizer trained on the records; returns its parameter count."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    shape = dict(SIZES[size])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([alpaca_prompt(r) + r["output"] for r in records], trainers.BpeTrainer(
        vocab_size=shape.pop("vocab"), special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", model_max_length=4096)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


class TokenCounter:
    """Counts the real tokens of every training forward once the timer has started."""

    def __init__(self, timer: StepTimer):
        self.timer, self.tokens = timer, 0

    def attach(self, model) -> None:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model

        def hook(module, args, kwargs):
            if module.training and self.timer.first is not None:
                mask = kwargs.get("attention_mask")
                ids = kwargs.get("input_ids")
                self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())

        inner.register_forward_pre_hook(hook, with_kwargs=True)


class CountFromTrainBegin(StepTimer):
    def __init__(self):
        super().__init__()
        self.counter = TokenCounter(self)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.counter.attach(model)


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


def plain_trl(model_dir: Path, records: list[dict], method: str, steps: int, batch: int, max_length: int,
              out: Path, **changes) -> float:
    """TRL's SFTTrainer with default arguments (only what must be set: output, steps, batch, CPU/no-bf16), plus
    `changes` for the variant that isolates one default."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    kwargs = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True,
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if cuda and method != "qlora":
        model.to("cuda")
    args = SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, max_length=max_length,
                     save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=1000,
                     **({} if cuda else {"bf16": False, "use_cpu": True}), **changes)
    data = datasets.Dataset.from_list([{"prompt": alpaca_prompt(r), "completion": r["output"]} for r in records])
    timer = CountFromTrainBegin()
    SFTTrainer(model=model, args=args, train_dataset=data, processing_class=AutoTokenizer.from_pretrained(model_dir),
               peft_config=lora_config() if method != "full" else None, callbacks=[timer]).train()
    return timer.counter.tokens / (timer.last - timer.first)


def ragtune_sft(model_dir: Path, records: list[dict], method: str, steps: int, batch: int, max_length: int,
                out: Path, **changes) -> float:
    """`ragtune train llm` with its defaults for everything the plain run does not also set."""
    from ragtune.config import load_config
    from ragtune.train.llm import train_llm

    data = out / "alpaca.json"
    out.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(records), encoding="utf-8")
    cfg = load_config("llm", None, [f"model.name={model_dir}", f"data.train={data}", f"output.dir={out / 'run'}",
                                    f"method={method}", "template=alpaca", f"max_length={max_length}",
                                    f"train.max_steps={steps}", f"train.per_device_train_batch_size={batch}",
                                    "train.eval_steps=100000", "train.save_steps=100000", "data.max_eval_samples=8",
                                    "eval.metrics=[perplexity]", "eval.generation_samples=0",
                                    "eval.samples_per_eval=0", "lora.r=16", "lora.alpha=32"])
    timer = CountFromTrainBegin()
    train_llm(cfg, overwrite=True, reporter=TimedReporter(timer))
    return timer.counter.tokens / (timer.last - timer.first)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted([*SIZES, "smollm2"]), default="tiny")
    parser.add_argument("--method", nargs="+", default=["lora"], choices=["full", "lora", "qlora"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--data", type=Path, default=ALPACA)
    args = parser.parse_args()
    records = [r for r in json.loads(args.data.read_text(encoding="utf-8")) if r["output"].strip()][: args.records]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        if args.size == "smollm2":
            from transformers import AutoModelForCausalLM

            from ragtune.models.packaged_llm import DEFAULT_GENERATOR
            from ragtune.models.resolve import resolve_model

            model_dir = Path(resolve_model(DEFAULT_GENERATOR))
            params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        else:
            params = build_model(model_dir, args.size, records)
        for method in args.method:
            runs = {}
            # TRL turns gradient checkpointing on by default and ragtune off; the middle run isolates packing.
            variants = (("plain_trl", plain_trl, {}),
                        ("plain_trl_no_checkpointing", plain_trl, {"gradient_checkpointing": False}),
                        ("ragtune", ragtune_sft, {}))
            for name, run, changes in variants:
                runs[name] = run(model_dir, records, method, args.steps, args.batch, args.max_length,
                                 Path(tmp) / f"{method}-{name}", **changes)
                torch.cuda.empty_cache() if torch.cuda.is_available() else None
            entry = {"tokens_per_s": {k: round(v, 1) for k, v in runs.items()},
                     "speedup": round(runs["ragtune"] / runs["plain_trl"], 3)}
            if peak:
                entry["mfu_6n"] = {k: round(6 * params * v / peak, 4) for k, v in runs.items()}
            results[method] = entry
            print(f"{args.size} {method} on {device}: plain TRL {runs['plain_trl']:.0f} tok/s (without gradient "
                  f"checkpointing {runs['plain_trl_no_checkpointing']:.0f}), ragtune {runs['ragtune']:.0f} tok/s, "
                  f"speed-up {entry['speedup']:.2f}x (target 1.5x)"
                  + (f", MFU {entry['mfu_6n']['plain_trl']:.1%} -> {entry['mfu_6n']['ragtune']:.1%}" if peak else ""))
    write_result(f"sft_throughput_{args.size}", {"device": device, "parameters": params, "steps": args.steps,
                                                 "batch": args.batch, "max_length": args.max_length,
                                                 "results": results})


if __name__ == "__main__":
    main()
