"""CUDA paths: QLoRA (4-bit NF4 through bitsandbytes) and bf16 LoRA on a tiny Llama, and merging a QLoRA adapter
into the unquantized base. Marked `gpu`: skipped where there is no CUDA (CI has none)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl

pytestmark = pytest.mark.gpu

ROWS = [{"instruction": f"name the organ number {i}", "input": "", "output": f"the heart {i}"} for i in range(48)]


def gpu_overrides(model: str, run_dir) -> list[str]:
    return [f"model.name={model}", f"output.dir={run_dir}", "train.max_steps=6", "train.eval_steps=3",
            "train.save_steps=3", "train.per_device_train_batch_size=8", "max_length=64", "train.learning_rate=1e-3",
            "eval.generation_samples=2", "eval.max_new_tokens=4", "data.max_eval_samples=4",
            "eval.metrics=[perplexity,f1]", "--allow-regression"]


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora_and_qlora_train_on_cuda(cli, tiny_llm, tmp_path, method):
    data = write_jsonl(tmp_path / "a.jsonl", ROWS)
    run_dir = tmp_path / method
    code, out, err = cli("train", "llm", f"data.train={data}", f"method={method}", *gpu_overrides(tiny_llm, run_dir))
    assert code == 0, err
    assert "device cuda, precision bf16" in out
    assert (run_dir / "final" / "adapter_config.json").is_file()
    after = json.loads((run_dir / "eval_after.json").read_text())["metrics"]
    assert after["perplexity"] > 0


def test_qlora_adapter_merges_into_an_unquantized_base(cli, tiny_llm, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_jsonl(tmp_path / "a.jsonl", ROWS)
    run_dir = tmp_path / "qlora"
    assert cli("train", "llm", f"data.train={data}", "method=qlora", *gpu_overrides(tiny_llm, run_dir))[0] == 0
    merged = tmp_path / "merged"
    code, _, err = cli("export", "merge", run_dir, "--out", merged)
    assert code == 0, err
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config  # merged into 16/32-bit weights, not the 4-bit ones
    model = AutoModelForCausalLM.from_pretrained(merged).to("cuda")
    tokenizer = AutoTokenizer.from_pretrained(merged)
    with torch.no_grad():
        logits = model(**tokenizer("name the organ", return_tensors="pt").to("cuda")).logits
    assert torch.isfinite(logits).all()
