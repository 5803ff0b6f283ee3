"""`ragtune train llm` on a tiny Llama-style model: every format and method, the loss mask, templates, packing,
resume of a LoRA run after kill -9, samples, and `ragtune export merge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_killed_at_step_2, write_jsonl

ALPACA = [{"instruction": f"name the organ number {i}", "input": "" if i % 2 else "briefly",
           "output": f"the heart {i}"} for i in range(24)]
FORMATS = {
    "alpaca": ALPACA,
    "instruction": [{"instruction": f"say hi {i}", "response": f"hello there {i}"} for i in range(24)],
    "chat": [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"hi {i}"},
                           {"role": "assistant", "content": f"hello {i}"}, {"role": "user", "content": "and?"},
                           {"role": "assistant", "content": f"bye {i}"}]} for i in range(24)],
    "prompt_completion": [{"prompt": f"The organ number {i} is the", "completion": f" heart {i}"} for i in range(24)],
    "text": [{"text": f"bone density and calcium intake study number {i}"} for i in range(24)],
    "hh": [{"chosen": f"\n\nHuman: what is {i}?\n\nAssistant: it is {i}.\n\nHuman: sure?\n\nAssistant: yes {i}.",
            "rejected": "x"} for i in range(24)],
}


def llm_overrides(model: str, run_dir: Path, steps: int = 4) -> list[str]:
    return [f"model.name={model}", f"output.dir={run_dir}", f"train.max_steps={steps}", "train.eval_steps=2",
            "train.save_steps=2", "train.logging_steps=1", "train.per_device_train_batch_size=4", "max_length=96",
            "eval.generation_samples=2", "eval.max_new_tokens=6", "eval.samples_per_eval=2",
            "data.max_eval_samples=4", "train.learning_rate=1e-3", "--allow-regression"]


def metrics_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_trains_with_lora(cli, tiny_llm, tmp_path, fmt):
    data = write_jsonl(tmp_path / f"{fmt}.jsonl", FORMATS[fmt])
    run_dir = tmp_path / "run"
    code, out, err = cli("train", "llm", f"data.train={data}", *llm_overrides(tiny_llm, run_dir))
    assert code == 0, err
    losses = [m["loss"] for m in metrics_of(run_dir) if "loss" in m]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert (run_dir / "final" / "adapter_config.json").is_file()
    for name in ("config.yaml", "eval_before.json", "eval_after.json", "summary.md", "train.log", "progress.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "samples.jsonl").is_file() == (fmt != "text")  # raw text has no prompts to answer
    after = json.loads((run_dir / "eval_after.json").read_text())["metrics"]
    assert after["perplexity"] > 0
    assert {"rouge_l", "bleu", "chrf", "exact_match", "f1"} <= set(after) or fmt == "text"
    if fmt != "text":  # the per-answer scores behind the paired test; bleu and chrf are corpus-level
        kept = [json.loads((run_dir / f"eval_{n}.json").read_text())["per_example"] for n in ("before", "after")]
        assert all(set(k) == {"rouge_l", "exact_match", "f1"} and len(k["f1"]) == 2 for k in kept)
    from ragtune.models.device import choose_placement
    from ragtune.models.language_model import load_for_inference

    model, tokenizer = load_for_inference(str(run_dir / "final"), choose_placement("cpu"))
    assert model(**tokenizer("hello", return_tensors="pt")).logits.shape[-1] == len(tokenizer)


def test_full_fine_tuning_saves_a_plain_model(cli, tiny_llm, tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "llm", f"data.train={data}", "method=full", "packing=false", "padding_free=false",
                       *llm_overrides(tiny_llm, run_dir))
    assert code == 0, err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    assert "<|im_start|>" in tokenizer.get_vocab() and model.get_input_embeddings().weight.shape[0] == len(tokenizer)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_mask_trains_only_answers(tiny_llm, fmt):
    """Zero trained tokens outside assistant turns / completions, on every format."""
    from ragtune.data.sft import load_sft_examples
    from ragtune.data.sft_tokens import IGNORE, encode
    from ragtune.ingest.readers import Row
    from ragtune.models.language_model import load_tokenizer
    from ragtune.models.templates import setup_template

    tokenizer = load_tokenizer(tiny_llm)
    setup_template(tokenizer, "chatml")
    rows = [Row(Path("x.jsonl"), i + 1, i, r) for i, r in enumerate(FORMATS[fmt][:3])]
    _, examples = load_sft_examples(rows)
    for example in examples:
        encoded = encode(example, tokenizer, 512)
        trained = tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE])
        untrained = tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label == IGNORE])
        if example.kind == "chat":
            answers = [m["content"] for m in example.messages if m["role"] == "assistant"]
            assert trained == "".join(f"{a}<|im_end|>\n" for a in answers)
            for message in example.messages:
                if message["role"] != "assistant":
                    assert message["content"] in untrained and message["content"] not in trained
        elif example.kind == "completion":
            assert trained == example.completion + "</s>" and untrained == example.prompt
        else:
            assert trained == example.completion + "</s>" and untrained == ""


def test_train_on_prompt_trains_everything(tiny_llm):
    from ragtune.data.sft import load_sft_examples
    from ragtune.data.sft_tokens import IGNORE, encode
    from ragtune.ingest.readers import Row
    from ragtune.models.language_model import load_tokenizer
    from ragtune.models.templates import setup_template

    tokenizer = load_tokenizer(tiny_llm)
    setup_template(tokenizer, "alpaca")
    _, (example,) = load_sft_examples([Row(Path("x"), 1, 0, ALPACA[0])])
    assert all(label != IGNORE for label in encode(example, tokenizer, 512, train_on_prompt=True).labels)
    masked = encode(example, tokenizer, 512)
    assert tokenizer.decode([t for t, lab in zip(masked.input_ids, masked.labels) if lab != IGNORE]) == \
        "the heart 0</s>"


def test_alpaca_template_renders_the_classic_prompt(tiny_llm):
    from ragtune.models.language_model import load_tokenizer
    from ragtune.models.templates import setup_template

    tokenizer = load_tokenizer(tiny_llm)
    used, added = setup_template(tokenizer, "alpaca")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Add 2 and 2"}], tokenize=False,
                                         add_generation_prompt=True)
    assert used == "alpaca" and added == [] and text == "### Instruction:\nAdd 2 and 2\n\n### Response:\n"


def test_template_is_saved_with_the_tokenizer_and_marked_example_is_shown(cli, tiny_llm, tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    run_dir = tmp_path / "run"
    code, out, err = cli("train", "llm", f"data.train={data}", "template=alpaca", *llm_overrides(tiny_llm, run_dir))
    assert code == 0, err
    assert "⟦the heart" in out and "### Response:" in out
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(run_dir / "final")
    prompt = saved.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("### Response:\n")


def test_special_tokens_are_added_resized_and_saved(cli, tiny_llm, tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"<tool> call {i}", "completion": " done"} for i in range(12)])
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "llm", f"data.train={data}", "special_tokens=[<tool>]", "method=full",
                       *llm_overrides(tiny_llm, run_dir))
    assert code == 0, err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    assert len(tokenizer.tokenize("<tool>")) == 1
    assert AutoModelForCausalLM.from_pretrained(run_dir / "final").get_input_embeddings().weight.shape[0] == \
        len(tokenizer)


def test_samples_are_written_at_every_evaluation(cli, tiny_llm, tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "llm", f"data.train={data}", *llm_overrides(tiny_llm, run_dir))
    assert code == 0, err
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 2, 4}  # before training, then at each evaluation
    assert all({"prompt", "reference", "generated"} <= set(s) for s in samples)
    assert samples[0]["reference"].startswith("the heart")


def test_packed_sequences_do_not_attend_to_each_other(tiny_llm):
    """Padding-free packing (position_ids restart per example, no cache: as TRL trains) keeps examples apart."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    a, b = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9, 10, 11]])
    packed = torch.cat([a, b], dim=1)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits
        alone = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits], dim=1)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_lora_resume_after_kill_continues_the_adapter(cli, tiny_llm, tmp_path):
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    common = [f"data.train={data}", "lora.dropout=0", "packing=false"]
    code, _, err = cli("train", "llm", *common, *llm_overrides(tiny_llm, tmp_path / "straight"))
    assert code == 0, err
    killed = tmp_path / "killed"
    args = ["train", "llm", *common, *llm_overrides(tiny_llm, killed)]
    run_killed_at_step_2(args, killed)
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    steps = [m["step"] for m in metrics_of(killed) if "loss" in m]
    assert steps[-1] == 4 and 3 in steps  # training went on from step 2
    straight = load_file(tmp_path / "straight" / "final" / "adapter_model.safetensors")
    resumed = load_file(killed / "final" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], atol=1e-4, rtol=1e-3)


def test_merge_gives_the_adapter_logits(cli, tiny_llm, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "llm", f"data.train={data}", "lora.dropout=0", *llm_overrides(tiny_llm, run_dir))
    assert code == 0, err
    merged_dir = tmp_path / "merged"
    code, _, err = cli("export", "merge", run_dir, "--out", merged_dir)
    assert code == 0, err
    assert list(merged_dir.glob("*.safetensors")) and not (merged_dir / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    ids = tokenizer("name the organ number 3", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(tiny_llm)
    base.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, str(run_dir / "final")).eval()(**ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()(**ids).logits
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=1e-4)
    code, _, err = cli("export", "merge", run_dir, "--out", merged_dir)
    assert code == 2 and "--overwrite" in err


def test_eval_generation_on_a_run_dir(cli, tiny_llm, tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    run_dir = tmp_path / "run"
    assert cli("train", "llm", f"data.train={data}", *llm_overrides(tiny_llm, run_dir))[0] == 0
    code, out, err = cli("--json", "eval", "generation", run_dir, "--data", data, "data.max_eval_samples=3",
                         "eval.generation_samples=2")
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert metrics["perplexity"] > 0 and 0 <= metrics["f1"] <= 1


def test_answer_start_weight_weighs_each_answers_first_token(tiny_llm):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from ragtune.train.llm import RagtuneSFTTrainer, answer_starts

    assert answer_starts(torch.tensor([[-100, -100, 5, 6, -100, -100, 7, 8]])).tolist() == \
        [[False, True, False, False, False, True, False]]  # two packed answers, each start marked once
    model = AutoModelForCausalLM.from_pretrained(tiny_llm)
    add_fused_lm_head(model)
    model.train()
    input_ids = torch.randint(5, 50, (1, 10), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    labels[0, [0, 1, 2, 6, 7]] = -100  # prompt, answer, prompt, answer
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0, :-1]
    per_token = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="none")
    first, second = int(labels[0, 3]), int(labels[0, 8])  # the two answers' first tokens
    for factors, start_weights in (({}, (3.0, 3.0)), ({first: 0.5, second: 4.0}, (1.5, 12.0))):
        trainer = SimpleNamespace(answer_start_weight=3.0, start_factors=factors, label_smoother=None,
                                  compute_loss_func=None, aux_loss_enabled=False,
                                  args=SimpleNamespace(average_tokens_across_devices=False, loss_type="nll"))
        loss = RagtuneSFTTrainer.compute_loss(trainer, model, {"input_ids": input_ids, "labels": labels})
        weights = torch.ones(9)
        weights[[2, 7]] = torch.tensor(start_weights)  # shifted positions of labels 3 and 8
        expected = (per_token * weights).sum() / (labels[0, 1:] != -100).sum()
        assert torch.allclose(loss, expected, atol=1e-4), (factors, loss, expected)


def test_balance_factors_weigh_rare_answer_starts_up_and_common_ones_down():
    from ragtune.train.llm import balance_factors, first_token_counts

    yes, no, maybe = 11, 22, 33
    examples = [[-100, -100, yes, 5, -100, no, 6]] * 3 + [[-100, maybe, 7]] + [[yes, 8]] * 2
    counts = first_token_counts(examples)
    assert counts == {yes: 5, no: 3, maybe: 1}
    factors = balance_factors(counts)
    assert factors[maybe] == 3.0 and factors[yes] == 9 / 15 and factors[no] == 1.0  # N / (kinds x count)
    assert balance_factors({1: 1000, 2: 1})[2] == 10.0  # clipped


def test_a_run_with_answer_start_weight_trains_and_records_it(cli, tiny_llm, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", FORMATS["chat"])
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "llm", f"data.train={data}", "answer_start_weight=10",
                       *llm_overrides(tiny_llm, run_dir, steps=2))
    assert code == 0, err
    losses = [m["loss"] for m in metrics_of(run_dir) if "loss" in m]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert "answer_start_weight: 10.0" in (run_dir / "config.yaml").read_text()
    code, out, err = cli("train", "llm", f"data.train={data}", "balance_answer_starts=true",
                         *llm_overrides(tiny_llm, tmp_path / "balanced", steps=2))
    assert code == 0, err
    assert "answer starts, class-balanced" in out + err
    for bad in (["answer_start_weight=0.5"], ["answer_start_weight=5", "train_on_prompt=true"],
                ["answer_start_weight=5", "train.extra={loss_type: dft}"],
                ["balance_answer_starts=true", "train_on_prompt=true"]):
        code, _, err = cli("train", "llm", f"data.train={data}", *bad, *llm_overrides(tiny_llm, tmp_path / "bad"))
        assert code == 2 and "answer_start_weight" in err and len(err.strip().splitlines()) == 1, (bad, err)
