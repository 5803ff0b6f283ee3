"""The bad-input sweep for `train llm`, `train seq2seq`, `eval generation` and `export merge`: exit 2, one line
naming the file, line and field, no traceback, and no run directory left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_bad_input import _write, one_line_error

GOOD = {"instruction": "name an organ", "input": "", "output": "the heart"}
LINE = json.dumps(GOOD) + "\n"

# name: (file content, needles the one error line must also hold)
LLM_DATA = {
    "malformed_jsonl": (LINE + '{"instruction": "x", "output": \n', [":2:", "malformed JSON"]),
    "missing_field": (LINE + '{"instruction": "x"}\n', [":2:", "'output'"]),
    "empty_file": ("", ["empty"]),
    "wrong_type": (LINE + '{"instruction": "x", "output": 42}\n', [":2:", "'output'", "string"]),
    "non_utf8": (LINE.encode() + b'{"instruction": "\xff", "output": "y"}\n', [":2:", "UTF-8"]),
    "unknown_format": ('{"question": "x", "reply": "y"}\n', [":1:", "cannot tell the SFT format"]),
    "chat_without_assistant": ('{"messages": [{"role": "user", "content": "hi"}]}\n',
                               [":1:", "no assistant turn"]),
    "roles_out_of_order": ('{"messages": [{"role": "assistant", "content": "hi"}, '
                           '{"role": "user", "content": "yo"}]}\n', [":1:", "messages[0]", "user turn belongs"]),
    "unknown_role": ('{"messages": [{"role": "bot", "content": "hi"}]}\n', [":1:", "messages[0].role", "'bot'"]),
    "content_not_text": ('{"messages": [{"role": "user", "content": ["hi"]}, '
                         '{"role": "assistant", "content": "x"}]}\n', [":1:", "messages[0].content"]),
    "hh_not_a_transcript": ('{"chosen": "just text"}\n', [":1:", "'chosen'", "Human/Assistant"]),
}


def llm_args(model: str, data: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "llm", f"data.train={data}", f"model.name={model}", f"output.dir={run_dir}",
            "train.max_steps=1", *extra]


@pytest.mark.parametrize("case", sorted(LLM_DATA))
def test_train_llm_bad_data(cli, tiny_llm, tmp_path, case):
    content, needles = LLM_DATA[case]
    data = _write(tmp_path / "d.jsonl", content)
    run_dir = tmp_path / "run"
    one_line_error(cli(*llm_args(tiny_llm, data, run_dir)), data, *needles)
    assert not run_dir.exists()


def test_response_past_max_length_trains_on_nothing(cli, tiny_llm, tmp_path):
    rows = [{"instruction": "word " * 200, "output": "the heart"}] + [GOOD] * 4
    data = _write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    one_line_error(cli(*llm_args(tiny_llm, data, tmp_path / "run", "max_length=32", "data.eval_fraction=0.2")),
                   f"{data}:1", "zero tokens", "max_length=32")


@pytest.mark.parametrize("override, needles", [
    ("template=vicuna", ["template", "unknown template 'vicuna'", "chatml"]),
    ("method=qlora", ["method=qlora", "CUDA", "method=lora"]),
    ("lora.target_modules=[q_proj,qkv_proj]", ["['qkv_proj'] not found", "'q_proj'", "'v_proj'"]),
    ("lora.r=0", ["lora.r"]),
    ("lora.alpah=8", ["unknown key 'lora.alpah'", "did you mean 'alpha'"]),
    ("eval.metrics=[bleu,rogue]", ["unknown metric 'rogue'", "did you mean 'rouge_l'"]),
    ("eval.metrics=[perplexity,accuracy]", ["eval.labels"]),
    ("packing=sometimes", ["packing"]),
])
def test_train_llm_bad_settings(cli, tiny_llm, tmp_path, override, needles):
    data = _write(tmp_path / "d.jsonl", LINE * 6)
    run_dir = tmp_path / "run"
    one_line_error(cli(*llm_args(tiny_llm, data, run_dir, override)), *needles)
    assert not run_dir.exists()


@pytest.mark.parametrize("model", ["nobody/no-such-llm", "/not/here"])
def test_train_llm_missing_model(cli, tmp_path, model):
    data = _write(tmp_path / "d.jsonl", LINE * 6)
    one_line_error(cli(*llm_args(model, data, tmp_path / "run")), model, "not found")


def test_train_llm_model_name_is_required(cli, tmp_path):
    data = _write(tmp_path / "d.jsonl", LINE * 6)
    one_line_error(cli("train", "llm", f"data.train={data}"), "model.name is not set")


def test_train_llm_on_an_embedding_model_says_what_it_is(cli, tiny_embedder, tmp_path):
    data = _write(tmp_path / "d.jsonl", LINE * 6)
    one_line_error(cli(*llm_args(tiny_embedder, data, tmp_path / "run")), "BertModel", "not a causal LM")


def test_max_length_past_the_position_table(cli, tiny_llm, tmp_path):
    data = _write(tmp_path / "d.jsonl", LINE * 6)
    one_line_error(cli(*llm_args(tiny_llm, data, tmp_path / "run", "max_length=4096")), "max_length=4096",
                   "2048 positions")


SEQ2SEQ_DATA = {
    "missing_target": ('{"source_text": "a"}\n', [":1:", "cannot find source/target"]),
    "target_not_text": ('{"source_text": "a", "target_text": 3}\n', [":1:", "'target_text'", "string"]),
    "empty_target": ('{"source_text": "a", "target_text": " "}\n', [":1:", "'target_text'", "empty"]),
    "non_utf8": (b'{"source_text": "\xff", "target_text": "b"}\n', [":1:", "UTF-8"]),
    "malformed": ('{"source_text": \n', [":1:", "malformed JSON"]),
}


@pytest.mark.parametrize("case", sorted(SEQ2SEQ_DATA))
def test_train_seq2seq_bad_data(cli, tiny_seq2seq, tmp_path, case):
    content, needles = SEQ2SEQ_DATA[case]
    data = _write(tmp_path / "d.jsonl", content)
    one_line_error(cli("train", "seq2seq", f"data.train={data}", f"model.name={tiny_seq2seq}",
                       f"output.dir={tmp_path / 'run'}"), data, *needles)


def test_export_merge_bad_sources(cli, tiny_llm, tmp_path):
    one_line_error(cli("export", "merge", tmp_path / "nothing", "--out", tmp_path / "m"), "no adapter_config.json")
    one_line_error(cli("export", "merge", tiny_llm, "--out", tmp_path / "m"), "full model", "nothing to merge")
    one_line_error(cli("export", "merge", tiny_llm, "--out", tmp_path / "m", "--dtype", "int3"), "--dtype 'int3'")


def test_eval_generation_bad_input(cli, tiny_llm, tmp_path):
    data = _write(tmp_path / "d.jsonl", LINE + "{oops\n")
    one_line_error(cli("eval", "generation", tiny_llm, "--data", data), f"{data}:2", "malformed JSON")
    good = _write(tmp_path / "g.jsonl", LINE * 3)
    one_line_error(cli("eval", "generation", tiny_llm, "--data", good, "--task", "embed"), "--task 'embed'")
    one_line_error(cli("eval", "generation", tmp_path / "nope", "--data", good), "not found")


def test_records_with_an_empty_answer_are_skipped_with_a_count(cli, tiny_llm, tmp_path):
    rows = [GOOD] * 6 + [{"instruction": "x", "input": "", "output": "  "}]
    folder = tmp_path / ("a-folder-with-a-long-name-" * 4)  # the warning must not wrap inside FILE:LINE
    folder.mkdir()
    data = _write(folder / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli(*llm_args(tiny_llm, data, tmp_path / "run", "max_length=64", "eval.generation_samples=1",
                                 "eval.max_new_tokens=2", "--allow-regression"))
    assert code == 0, err
    assert "1 records with an empty answer or text were skipped" in err and f"{data}:7" in err
    empty = _write(tmp_path / "e.jsonl", json.dumps({"instruction": "x", "output": ""}) + "\n")
    one_line_error(cli(*llm_args(tiny_llm, empty, tmp_path / "run2")), empty, "every record is empty")


def test_doctor_checks_an_llm_config_and_its_data(cli, tiny_llm, tmp_path):
    good = _write(tmp_path / "d.jsonl", LINE * 10)
    config = _write(tmp_path / "llm.yaml", f"model:\n  name: {tiny_llm}\ndata:\n  train: {good}\n")
    code, out, err = cli("--json", "doctor", "--task", "llm", "--config", config)
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["data"]["ok"] and "alpaca training examples" in checks["data"]["detail"], checks
    assert checks["model"]["ok"]
    bad = _write(tmp_path / "bad.jsonl", LINE + "{oops\n")
    config.write_text(f"model:\n  name: {tiny_llm}\ndata:\n  train: {bad}\n", encoding="utf-8")
    code, out, err = cli("--json", "doctor", "--task", "llm", "--config", config)
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 2 and not checks["data"]["ok"] and f"{bad}:2" in checks["data"]["detail"]


def test_a_missing_extra_names_the_install_command(cli, tiny_llm, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "trl", None)  # as if ragtune[llm] were not installed
    data = _write(tmp_path / "d.jsonl", LINE * 6)
    one_line_error(cli(*llm_args(tiny_llm, data, tmp_path / "run")), "'trl'", "pip install 'ragtune[llm]'")
    assert not (tmp_path / "run").exists()
