"""final/README.md of every task, and of `export merge` / `export onnx`: the proof, a model-index, licenses, and load
code that runs as written."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import tiny_train_overrides, write_jsonl
from tests.unit.test_bad_input import _write
from tests.unit.test_multivector import tiny_multivector_overrides
from tests.unit.test_seq2seq import PAIRS, s2s_overrides
from tests.unit.test_train_llm import llm_overrides
from tests.unit.test_train_rerank import tiny_rerank_overrides

CHATS = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "yes"}]}
         for i in range(12)]


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4:card.index("\n---", 4)])


def run_load_code(card: str) -> dict:
    """Execute the card's first Python block, as a user would paste it; return its variables."""
    scope: dict = {}
    exec(card.split("```python\n")[1].split("```")[0], scope)  # noqa: S102 (the card's own code)
    return scope


def index_metrics(meta: dict) -> dict[str, float]:
    return {m["type"]: m["value"] for entry in meta["model-index"] for result in entry["results"]
            for m in result["metrics"]}


def check_proof(run_dir, task: str) -> str:
    card = (run_dir / "final" / "README.md").read_text()
    after = json.loads((run_dir / "eval_after.json").read_text())["metrics"]
    meta = front_matter(card)
    primary = next(k for k in after if f"| **{k}** |" in card)
    assert index_metrics(meta)[primary] == pytest.approx(after[primary])  # ragtune's metric in the metadata
    assert "| metric | before | after | delta |" in card and "**Verdict:**" in card
    assert f"Reproduce: `ragtune train {task} -c {run_dir / 'config.yaml'} --overwrite`" in card
    assert "## Licenses" in card and "base model `" in card and "training data `" in card
    return card


def test_an_embed_card_holds_the_proof_and_loads(cli, tiny_embedder, pairs_file, tmp_path):
    _write(pairs_file.parent / "LICENSE", "MIT License\n\nCopyright (c) the toy data\n")
    run = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run),
                       "--allow-regression")
    assert code == 0, err
    card = check_proof(run, "embed")
    assert "MIT License" in card  # the data's license, read beside it
    assert "sentence-transformers' own card" in card and "### Training Hyperparameters" in card
    assert front_matter(card)["library_name"] == "sentence-transformers"
    assert run_load_code(card)["vectors"].shape == (2, 32)


def test_a_rerank_card_holds_the_proof_and_loads(cli, tiny_cross_encoder, pairs_file, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={pairs_file}", *tiny_rerank_overrides(tiny_cross_encoder, run),
                       "--allow-regression")
    assert code == 0, err
    card = check_proof(run, "rerank")
    assert "Reranking" in json.dumps(front_matter(card)["model-index"])
    assert len(run_load_code(card)["scores"]) == 1


def test_a_multivector_card_holds_the_proof_and_loads(cli, tiny_embedder, pairs_file, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", "multivector", *tiny_multivector_overrides(tiny_embedder, run,
                                                                            f"data.train={pairs_file}"))
    assert code in (0, 1), err  # the verdict on five toy queries may go either way
    card = check_proof(run, "multivector")
    assert len(run_load_code(card)["token_vectors"]) == 1


@pytest.mark.parametrize("method", ["full", "lora"])
def test_an_llm_card_holds_the_proof_and_loads(cli, tiny_llm, tmp_path, method):
    run = tmp_path / "run"
    code, _, err = cli("train", "llm", f"data.train={write_jsonl(tmp_path / 'chat.jsonl', CHATS)}",
                       f"method={method}", *llm_overrides(tiny_llm, run))
    assert code == 0, err
    card = check_proof(run, "llm")
    meta = front_matter(card)
    assert meta["pipeline_tag"] == "text-generation" and "ragtune" in meta["tags"]
    assert meta["library_name"] == ("peft" if method == "lora" else "transformers")
    model = run_load_code(card)["model"]
    assert type(model).__name__ == ("PeftModelForCausalLM" if method == "lora" else "LlamaForCausalLM")
    if method == "lora":  # the tiny LM has no chat template: the run added ChatML tokens, so the card resizes
        assert "resize_token_embeddings" in card and "ragtune export merge" in card
        merged = tmp_path / "merged"
        code, _, err = cli("export", "merge", run, "--out", merged)
        assert code == 0, err
        merged_card = (merged / "README.md").read_text()
        assert "## The adapter's run" in merged_card and "| metric | before | after | delta |" in merged_card
        assert front_matter(merged_card)["library_name"] == "transformers"
        assert type(run_load_code(merged_card)["model"]).__name__ == "LlamaForCausalLM"


def test_a_seq2seq_card_holds_the_proof_and_loads(cli, tiny_seq2seq, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", "seq2seq", f"data.train={write_jsonl(tmp_path / 'pairs.jsonl', PAIRS)}",
                       *s2s_overrides(tiny_seq2seq, run))
    assert code == 0, err
    card = check_proof(run, "seq2seq")
    assert front_matter(card)["pipeline_tag"] == "text2text-generation"
    assert type(run_load_code(card)["model"]).__name__ == "T5ForConditionalGeneration"


def test_an_onnx_export_card_says_what_runs_and_loads(cli, tiny_embedder, tmp_path):
    pytest.importorskip("onnxruntime")
    from tests.unit.test_bad_input import make_beir

    out = tmp_path / "exported"
    code, _, err = cli("export", "onnx", tiny_embedder, "--out", out, "--eval", make_beir(tmp_path / "beir"),
                       "--quantize", "none")
    assert code == 0, err
    card = (out / "README.md").read_text()
    onnx_part = card[card.index("## ONNX export"):]
    assert "| torch fp32 |" in onnx_part and "| onnx fp32 |" in onnx_part and "reference" in onnx_part
    scope: dict = {}
    exec(onnx_part.split("```python\n")[1].split("```")[0], scope)  # noqa: S102 (the card's own code)
    assert getattr(scope["model"], "ragtune_backend", "torch").startswith("onnx:")
    assert re.search(r"ragtune runs `onnx/model\.onnx`", onnx_part)
