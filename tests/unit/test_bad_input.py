"""The bad-input sweep: every loader and command, fed broken input through the real CLI.

Contract: exit code 2, exactly one line on stderr that names the file (and the line and field where they apply),
no traceback; under --json the error is a JSON object on stdout; a failed run never deletes an existing run
directory. Every case fails before any weights are loaded or any training step runs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import toy_pairs, write_jsonl

GOOD = [{"query": "what is asthma", "document": "asthma is a lung disease"},
        {"query": "what is a stroke", "document": "a stroke cuts blood to the brain"}]
GOOD_TEXT = "".join(json.dumps(r) + "\n" for r in GOOD)


def one_line_error(result, *needles) -> str:
    """Assert exit 2, one stderr line, no traceback, and every needle in that line; return the line."""
    code, out, err = result
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ bad data files
# Each case: file name, content (None: the file does not exist), what the one line must also say.

DATA_CASES = {
    "malformed_jsonl_line": ("d.jsonl", GOOD_TEXT + '{"query": "x", "document": \n', [":3:", "malformed JSON"]),
    "missing_field": ("d.jsonl", GOOD_TEXT + '{"query": "x"}\n', [":3:", "'document'"]),
    "misspelt_field": ("d.jsonl", GOOD_TEXT + '{"query": "x", "docment": "y"}\n', [":3:", "'document'"]),
    "null_field": ("d.jsonl", GOOD_TEXT + '{"query": null, "document": "y"}\n', [":3:", "'query'"]),
    "empty_file": ("d.jsonl", "", ["empty"]),
    "blank_lines_only": ("d.jsonl", "\n \n\n", ["empty"]),
    "number_for_text": ("d.jsonl", GOOD_TEXT + '{"query": 42, "document": "y"}\n', [":3:", "'query'", "string"]),
    "object_for_text": ("d.jsonl", GOOD_TEXT + '{"query": "x", "document": {"a": 1}}\n', [":3:", "'document'"]),
    "line_not_an_object": ("d.jsonl", GOOD_TEXT + '["x", "y"]\n', [":3:", "JSON object"]),
    "score_above_one": ("s.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 0.3}\n'
                                   '{"sentence1": "c", "sentence2": "d", "score": 4}\n', [":2:", "'score'", "[0, 1]"]),
    "score_not_a_number": ("s.jsonl", '{"sentence1": "a", "sentence2": "b", "score": "high"}\n',
                           [":1:", "'score'"]),
    "similarity_below_zero": ("s.jsonl", '{"doc1": "a", "doc2": "b", "similarity": -1}\n', [":1:", "'similarity'"]),
    "non_utf8": ("d.jsonl", GOOD_TEXT.encode() + b'{"query": "caf\xe9", "document": "y"}\n', [":3:", "UTF-8"]),
    "non_utf8_csv": ("d.csv", b"query,document\na,b\n\xff\xfe,c\n", [":3:", "UTF-8"]),
    "ragged_negatives": ("t.jsonl", '{"query": "a", "positive": "b", "negatives": ["c", "d"]}\n'
                                    '{"query": "e", "positive": "f", "negatives": ["g", "h"]}\n'
                                    '{"query": "i", "positive": "j", "negatives": ["k"]}\n',
                         [":3:", "'negatives'", "1 negatives", "2"]),
    "negatives_not_a_list": ("t.jsonl", '{"query": "a", "positive": "b", "negatives": "c"}\n',
                             [":1:", "'negatives'"]),
    "negative_not_text": ("t.jsonl", '{"query": "a", "positive": "b", "negatives": ["c", 7]}\n',
                          [":1:", "'negatives'"]),
    "unknown_fields": ("d.jsonl", '{"title": "a", "body": "b"}\n', [":1:", "cannot tell the format"]),
    "json_not_an_array": ("d.json", '{"query": "a", "document": "b"}', ["JSON array"]),
    "json_syntax": ("d.json", '[{"query": "a",\n "document": }]', [":2:", "malformed JSON"]),
    "csv_extra_values": ("d.csv", "query,document\na,b\nc,d,e\n", [":3:", "header"]),
    "csv_missing_value": ("d.csv", "query,document\na,b\nc\n", [":3:", "'document'"]),
    "bad_gzip": ("d.jsonl.gz", b"this is not gzip", ["gzip"]),
    "gzip_malformed_line": ("d.jsonl.gz", gzip.compress(GOOD_TEXT.encode() + b"{oops\n"), [":3:", "malformed JSON"]),
    "bad_parquet": ("d.parquet", b"PAR1 junk", ["Parquet"]),
    "unsupported_suffix": ("d.txt", "query\tdocument\n", ["unsupported file type"]),
    "missing_file": ("missing.jsonl", None, ["no such file"]),
}


@pytest.fixture(params=sorted(DATA_CASES), ids=sorted(DATA_CASES))
def bad_data(request, tmp_path):
    name, content, needles = DATA_CASES[request.param]
    path = tmp_path / "data" / name
    if content is not None:
        _write(path, content)
    return path, needles


def test_data_validate_bad_data(cli, bad_data):
    path, needles = bad_data
    one_line_error(cli("data", "validate", path), path, *needles)


def test_train_embed_bad_data(cli, bad_data, tiny_embedder, tmp_path):
    path, needles = bad_data
    run_dir = tmp_path / "run"
    one_line_error(cli("train", "embed", f"data.train={path}", f"model.name={tiny_embedder}",
                       f"output.dir={run_dir}"), path, *needles)
    assert not run_dir.exists()  # failed before the run directory (and any training)


def test_train_embed_bad_eval_file(cli, bad_data, pairs_file, tiny_embedder, tmp_path):
    path, needles = bad_data
    run_dir = tmp_path / "run"
    one_line_error(cli("train", "embed", f"data.train={pairs_file}", f"data.eval={path}",
                       f"model.name={tiny_embedder}", f"output.dir={run_dir}"), path, *needles)
    assert not run_dir.exists()


def test_train_embed_bad_data_from_a_config_file(cli, bad_data, tiny_embedder, tmp_path):
    path, needles = bad_data
    config = _write(tmp_path / "c.yaml", f"model:\n  name: {tiny_embedder}\ndata:\n  train: {path}\n"
                                         f"output:\n  dir: {tmp_path / 'run'}\n")
    one_line_error(cli("train", "embed", "-c", config), path, *needles)


def test_doctor_config_bad_data(cli, bad_data, tiny_embedder, tmp_path):
    path, needles = bad_data
    config = _write(tmp_path / "c.yaml", f"model:\n  name: {tiny_embedder}\ndata:\n  train: {path}\n")
    code, out, err = cli("--json", "doctor", "--config", config)
    assert code == 2 and "Traceback" not in out + err and err == ""
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["config"]["ok"] and checks["model"]["ok"] and not checks["data"]["ok"]
    detail = checks["data"]["detail"]
    assert "\n" not in detail and str(path) in detail and all(n in detail for n in needles)


def test_folder_names_the_bad_file(cli, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", GOOD)
    bad = _write(folder / "b.jsonl", GOOD_TEXT + '{"query": "x"}\n')
    one_line_error(cli("data", "validate", folder), bad, ":3:", "'document'")


def test_broken_hf_dataset_dir(cli, tmp_path):
    folder = tmp_path / "hf"
    _write(folder / "dataset_info.json", "{}")
    one_line_error(cli("data", "validate", folder), folder, "HF dataset")


def test_hf_dataset_wrong_type_names_the_row(cli, tmp_path):
    import datasets

    ints = tmp_path / "hf_ints"
    datasets.Dataset.from_list([{"query": 1, "document": "b"}]).save_to_disk(str(ints))
    one_line_error(cli("data", "validate", ints), ints, "(row 1)", "'query'")


def test_forced_format_mismatch(cli, pairs_file):
    one_line_error(cli("data", "validate", pairs_file, "--format", "triplets"), pairs_file, ":", "triplets", "pairs")


def test_bad_column_option_format(cli, pairs_file):
    one_line_error(cli("data", "validate", pairs_file, "--column", "anchor"), "'anchor'", "KEY=VALUE")


def test_unknown_column_role_suggests(cli, pairs_file):
    one_line_error(cli("data", "validate", pairs_file, "--column", "anchr=query"), "anchr", "did you mean 'anchor'")


def test_unknown_column_role_in_a_config_names_the_file(cli, pairs_file, tiny_embedder, tmp_path):
    config = _write(tmp_path / "c.yaml", f"data:\n  train: {pairs_file}\n  columns:\n    anchr: query\n")
    one_line_error(cli("train", "embed", "-c", config, f"model.name={tiny_embedder}",
                       f"output.dir={tmp_path / 'run'}"), config, "line 3", "data.columns", "anchr")


def test_unknown_format_option(cli, pairs_file):
    one_line_error(cli("data", "validate", pairs_file, "--format", "bogus"), "bogus", "auto", "triplets",
                   "scored_pairs")


# -------------------------------------------------------------------------------------------------------- BEIR


def make_beir(root: Path) -> Path:
    pairs = toy_pairs()[:8]
    write_jsonl(_write(root / "corpus.jsonl", ""), [{"_id": f"d{i}", "title": "", "text": p["document"]}
                                                    for i, p in enumerate(pairs)])
    write_jsonl(root / "queries.jsonl", [{"_id": f"q{i}", "text": p["query"]} for i, p in enumerate(pairs)])
    _write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    _write(root / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\n" +
           "".join(f"q{i}\td{i}\t1\n" for i in range(3, 8)))
    return root


# Each case: file inside the BEIR dir, its new content, what the line must also say.
BEIR_CASES = {
    "qrels_two_columns": ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\n",
                          [":3:", "3 tab-separated columns", "got 2"]),
    "qrels_five_columns": ("qrels/test.tsv", "q0\td0\t1\nq1\t0\td1\t1\textra\n", [":2:", "got 5"]),
    "qrels_score_not_int": ("qrels/test.tsv", "q0\td0\tyes\n", [":1:", "'score'"]),
    "qrels_empty": ("qrels/test.tsv", "", ["no judgements"]),
    "qrels_non_utf8": ("qrels/test.tsv", b"q0\td0\t1\n\xff\td1\t1\n", [":2:", "UTF-8"]),
    "qrels_unknown_query": ("qrels/test.tsv", "q0\td0\t1\nq77\td1\t1\n", ["'q77'", "queries.jsonl"]),
    "corpus_malformed_line": ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n{"_id": "d1", "text": \n',
                              [":2:", "malformed JSON"]),
    "corpus_missing_text": ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n{"_id": "d1"}\n', [":2:", "'text'"]),
    "corpus_title_not_text": ("corpus.jsonl", '{"_id": "d0", "text": "a", "title": ["x"]}\n', [":1:", "'title'"]),
    "corpus_text_is_a_list": ("corpus.jsonl", '{"_id": "d0", "text": ["a"]}\n', [":1:", "'text'"]),
    "corpus_empty": ("corpus.jsonl", "", ["empty"]),
    "queries_missing_id": ("queries.jsonl", '{"text": "a"}\n', [":1:", "'_id'"]),
    "corpus_repeated_id": ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n{"_id": "d1", "text": "b"}\n'
                           '{"_id": "d0", "text": "c"}\n', [":3:", "_id 'd0' already appears at line 1"]),
    "queries_non_utf8": ("queries.jsonl", b'{"_id": "q0", "text": "\xff"}\n', [":1:", "UTF-8"]),
}


@pytest.fixture(params=sorted(BEIR_CASES), ids=sorted(BEIR_CASES))
def bad_beir(request, tmp_path):
    name, content, needles = BEIR_CASES[request.param]
    root = make_beir(tmp_path / "beir")
    return root, _write(root / name, content), needles


def test_eval_retrieval_bad_beir(cli, bad_beir, tiny_embedder):
    root, path, needles = bad_beir
    one_line_error(cli("eval", "retrieval", "--data", root, "--pipeline", f"dense:{tiny_embedder}"), path, *needles)


def test_data_validate_bad_beir(cli, bad_beir):
    root, path, needles = bad_beir
    one_line_error(cli("data", "validate", root), path, *needles)


def test_train_embed_bad_beir(cli, bad_beir, tiny_embedder, tmp_path):
    root, path, needles = bad_beir
    run_dir = tmp_path / "run"
    one_line_error(cli("train", "embed", f"data.train={root}", f"model.name={tiny_embedder}",
                       f"output.dir={run_dir}"), path, *needles)
    assert not run_dir.exists()


def test_beir_missing_split(cli, tiny_embedder, tmp_path):
    root = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", root, "--split", "dev", "--pipeline", f"dense:{tiny_embedder}"),
                   root / "qrels" / "dev.tsv", "['test', 'train']")
    one_line_error(cli("train", "embed", f"data.train={root}", "data.eval_split=dev", f"model.name={tiny_embedder}",
                       f"output.dir={tmp_path / 'run'}"), root / "qrels" / "dev.tsv")


def test_not_a_beir_dir(cli, tiny_embedder, tmp_path):
    one_line_error(cli("eval", "retrieval", "--data", tmp_path / "nowhere", "--pipeline", f"dense:{tiny_embedder}"),
                   tmp_path / "nowhere", "not a BEIR directory")
    one_line_error(cli("train", "embed", f"data.train={tmp_path / 'nowhere'}", "data.format=beir",
                       f"model.name={tiny_embedder}", f"output.dir={tmp_path / 'run'}"), tmp_path / "nowhere")


def test_beir_train_split_without_usable_judgements(cli, tiny_embedder, tmp_path):
    root = make_beir(tmp_path / "beir")
    train = _write(root / "qrels" / "train.tsv", "q5\td404\t1\nq6\td6\t0\n")
    one_line_error(cli("train", "embed", f"data.train={root}", f"model.name={tiny_embedder}",
                       f"output.dir={tmp_path / 'run'}"), train, "1 judgements of unknown document ids", "'d404'",
                   "data.unknown_ids=skip")
    code, _, err = cli("train", "embed", f"data.train={root}", f"model.name={tiny_embedder}", "data.unknown_ids=skip",
                       f"output.dir={tmp_path / 'run'}")
    assert code == 2 and "Traceback" not in err
    assert "1 judgements of unknown document ids" in err and "skipped" in err  # reported with its count
    assert "no positive judgements" in err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------- eval retrieval flags


@pytest.mark.parametrize("spec", ["bm25:foo", "dense:", "dense", "hybrid:a+b", ""])
def test_unknown_pipeline_spec(cli, spec, tmp_path):
    root = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", root, "--pipeline", spec), f"--pipeline '{spec}'",
                   "at column", "dense:MODEL")


def test_bad_pipeline_fails_before_loading_the_good_one(cli, tiny_embedder, tmp_path, monkeypatch):
    import ragtune.models.load as load

    monkeypatch.setattr(load, "load_embedder", lambda *a, **k: pytest.fail("a model was loaded"))
    root = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", root, "-p", f"dense:{tiny_embedder}", "-p", "bm25:x"),
                   "bm25:x")


@pytest.mark.parametrize("model", ["nobody/no-such-model", "/definitely/not/here", "./relative-missing"])
def test_eval_missing_model(cli, model, tmp_path):
    root = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", root, "--pipeline", f"dense:{model}"), model, "not found")


def test_eval_folder_that_is_not_a_model(cli, tmp_path):
    root = make_beir(tmp_path / "beir")
    folder = tmp_path / "empty-model"
    folder.mkdir()
    one_line_error(cli("eval", "retrieval", "--data", root, "--pipeline", f"dense:{folder}"), folder, "config.json")


def test_eval_broken_model_folder(cli, tmp_path):
    root = make_beir(tmp_path / "beir")
    folder = tmp_path / "broken-model"
    _write(folder / "config.json", "{ not json")
    one_line_error(cli("eval", "retrieval", "--data", root, "--pipeline", f"dense:{folder}"), folder,
                   "could not be loaded")


def test_negative_max_queries(cli, tiny_embedder, tmp_path):
    root = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", root, "--pipeline", f"dense:{tiny_embedder}",
                       "--max-queries", "-1"), "--max-queries")


def test_unknown_precision(cli, tiny_embedder, tmp_path):
    root = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", root, "--pipeline", f"dense:{tiny_embedder}",
                       "--precision", "bogus"), "--precision", "bogus")


def test_unknown_device(cli, tiny_embedder, tmp_path):
    root = make_beir(tmp_path / "beir")
    line = one_line_error(cli("eval", "retrieval", "--data", root, "--pipeline", f"dense:{tiny_embedder}",
                              "--device", "bogus"), "--device", "bogus")
    assert "could not be loaded" not in line


# ------------------------------------------------------------------------------------------------------ configs
# Each case: config text, what the one line must also say (besides the file).

CONFIG_CASES = {
    "unknown_key": ("train:\n  seed: 1\n  lerning_rate: 1.0e-4\n",
                    ["line 3", "unknown key 'train.lerning_rate'", "did you mean 'learning_rate'"]),
    "unknown_section": ("trian:\n  seed: 1\n", ["line 1", "'trian'", "did you mean 'train'"]),
    "unknown_loss": ("loss: mnlr\n", ["line 1", "'mnlr'", "did you mean 'mnrl'"]),
    "string_learning_rate": ("train:\n  learning_rate: fast\n", ["line 2", "train.learning_rate", "'fast'"]),
    "negative_batch_size": ("train:\n  per_device_train_batch_size: -4\n", ["line 2", "per_device_train_batch_size"]),
    "bad_device": ("model:\n  device: gpu\n", ["line 2", "model.device", "'gpu'"]),
    "section_not_a_mapping": ("train: 5\n", ["line 1", "train"]),
    "two_problems_one_line": ("train:\n  lerning_rate: 1\n  seed: abc\n", ["2 problems", "line 2", "line 3"]),
    "malformed_yaml": ("train:\n  learning_rate: [1e-4\n  seed: 1\n", ["invalid YAML", "line"]),
    "tab_indent_yaml": ("train:\n\tseed: 1\n", ["invalid YAML", "line 2"]),
    "non_utf8": (b"train:\n  seed: 1\n# caf\xe9\n", ["line 3", "UTF-8"]),
    "empty": ("", ["empty"]),
    "top_level_list": ("- train\n- seed\n", ["mapping"]),
    "bad_json": ('{"train": {"seed": 1}', ["invalid YAML"]),
}


@pytest.fixture(params=sorted(CONFIG_CASES), ids=sorted(CONFIG_CASES))
def bad_config(request, tmp_path):
    content, needles = CONFIG_CASES[request.param]
    suffix = ".json" if request.param == "bad_json" else ".yaml"
    return _write(tmp_path / f"config{suffix}", content), needles


def test_train_embed_bad_config(cli, bad_config, pairs_file, tiny_embedder, tmp_path):
    path, needles = bad_config
    run_dir = tmp_path / "run"
    one_line_error(cli("train", "embed", "-c", path, f"data.train={pairs_file}", f"model.name={tiny_embedder}",
                       f"output.dir={run_dir}"), path, *needles)
    assert not run_dir.exists()


def test_doctor_bad_config(cli, bad_config):
    path, needles = bad_config
    code, out, err = cli("--json", "doctor", "--config", path)
    assert code == 2 and "Traceback" not in out + err and err == ""
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    detail = checks["config"]["detail"]
    assert not checks["config"]["ok"] and "\n" not in detail
    assert str(path) in detail and all(n in detail for n in needles), detail


def test_missing_config_file(cli, tmp_path):
    missing = tmp_path / "nope.yaml"
    one_line_error(cli("train", "embed", "-c", missing), missing, "not found")
    code, out, _ = cli("--json", "doctor", "--config", missing)
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 2 and str(missing) in checks["config"]["detail"]


@pytest.mark.parametrize("override, needles", [
    ("train.lerning_rate=1e-4", ["unknown key 'train.lerning_rate'", "did you mean 'learning_rate'"]),
    ("trian.seed=1", ["'trian'", "did you mean 'train'"]),
    ("train.learning_rate=fast", ["train.learning_rate", "'fast'"]),
    ("train.learning_rate=[1, 2]", ["train.learning_rate"]),
    ("eval.primary_metric=ndcg@7", ["primary_metric", "ndcg@7"]),
    ("loss=cosin", ["'cosin'", "did you mean 'cosine'"]),
    ("train.learning_rate", ["'train.learning_rate'", "KEY=VALUE"]),
    ("=1e-4", ["'=1e-4'", "KEY=VALUE"]),
    ("train..seed=1", ["'train..seed=1'", "KEY=VALUE"]),
])
def test_bad_overrides(cli, override, needles, pairs_file, tiny_embedder, tmp_path):
    run_dir = tmp_path / "run"
    one_line_error(cli("train", "embed", f"data.train={pairs_file}", f"model.name={tiny_embedder}",
                       f"output.dir={run_dir}", override), *needles)
    assert not run_dir.exists()


def test_override_problem_with_a_config_file(cli, pairs_file, tiny_embedder, tmp_path):
    config = _write(tmp_path / "c.yaml", f"data:\n  train: {pairs_file}\n")
    one_line_error(cli("train", "embed", "-c", config, "train.lerning_rate=1", f"model.name={tiny_embedder}"),
                   "unknown key 'train.lerning_rate'", "did you mean 'learning_rate'")


def test_data_train_not_set(cli, tiny_embedder, tmp_path):
    one_line_error(cli("train", "embed", f"model.name={tiny_embedder}", f"output.dir={tmp_path / 'run'}"),
                   "data.train is not set")


def test_incompatible_loss(cli, pairs_file, tiny_embedder, tmp_path):
    one_line_error(cli("train", "embed", f"data.train={pairs_file}", "loss=cosine", f"model.name={tiny_embedder}",
                       f"output.dir={tmp_path / 'run'}"), "cosine", "pairs")
    scored = write_jsonl(tmp_path / "s.jsonl", [{"sentence1": f"q{i}", "sentence2": f"d{i}", "score": 0.5}
                                                for i in range(10)])
    one_line_error(cli("train", "embed", f"data.train={scored}", "loss=contrastive", f"model.name={tiny_embedder}",
                       f"output.dir={tmp_path / 'run'}"), "contrastive", "0/1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["nobody/no-such-model", "/definitely/not/here"])
def test_train_missing_model(cli, model, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    one_line_error(cli("train", "embed", f"data.train={pairs_file}", f"model.name={model}",
                       f"output.dir={run_dir}"), model, "not found")
    assert not run_dir.exists()


def test_doctor_missing_model(cli, pairs_file, tmp_path):
    config = _write(tmp_path / "c.yaml", f"model:\n  name: /definitely/not/here\ndata:\n  train: {pairs_file}\n")
    code, out, err = cli("--json", "doctor", "--config", config)
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 2 and err == "" and checks["data"]["ok"] and not checks["model"]["ok"]
    assert "/definitely/not/here" in checks["model"]["detail"]


def test_doctor_failure_is_one_line_on_stderr(cli, tmp_path):
    config = _write(tmp_path / "c.yaml", "train:\n  lerning_rate: 1\n")
    one_line_error(cli("doctor", "--config", config), config, "line 2", "did you mean 'learning_rate'")


@pytest.mark.parametrize("task, needles", [("embd", ["'embd'", "did you mean 'embed'"]),
                                           ("rerank-xyz", ["'rerank-xyz'", "embed"])])
def test_config_show_unknown_task(cli, task, needles):
    one_line_error(cli("config", "show", task), *needles)


# ------------------------------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args, needle", [
    (["config", "show"], "task"),
    (["train", "embed", "--bogus"], "--bogus"),
    (["eval", "retrieval", "--data", "x", "--pipeline", "dense:x", "--max-queries", "abc"], "--max-queries"),
    (["eval", "retrieval", "--pipeline", "dense:x"], "--data"),
    (["no-such-command"], "no-such-command"),
])
def test_usage_errors_exit_2_without_traceback(cli, args, needle):
    code, out, err = cli(*args)
    assert code == 2 and "Traceback" not in out + err
    lines = err.splitlines()
    assert 1 <= len(lines) <= 2 and needle in lines[-1]  # the usage line, then the one error line


# ------------------------------------------------------------------------------------------------------ --json


def _json_error(result, *needles) -> dict:
    code, out, err = result
    assert code == 2 and "Traceback" not in out + err
    assert err == "", err
    payload = json.loads(out)
    assert isinstance(payload, dict) and payload["exit_code"] == 2 and "\n" not in payload["error"]
    for needle in needles:
        assert str(needle) in payload["error"], (needle, payload)
    return payload


def test_json_errors_data_validate(cli, tmp_path):
    path = _write(tmp_path / "d.jsonl", GOOD_TEXT + "{oops\n")
    _json_error(cli("--json", "data", "validate", path), path, ":3:", "malformed JSON")
    _json_error(cli("data", "validate", tmp_path / "missing.jsonl", "--json"), tmp_path / "missing.jsonl")


def test_json_errors_train_embed(cli, tiny_embedder, tmp_path):
    path = _write(tmp_path / "d.jsonl", GOOD_TEXT + '{"query": 1, "document": "x"}\n')
    _json_error(cli("--json", "train", "embed", f"data.train={path}", f"model.name={tiny_embedder}",
                    f"output.dir={tmp_path / 'run'}"), path, ":3:", "'query'")
    config = _write(tmp_path / "c.yaml", "train:\n  lerning_rate: 1\n")
    _json_error(cli("train", "embed", "-c", config, "--json"), config, "did you mean 'learning_rate'")
    _json_error(cli("--json", "train", "embed", "nonsense"), "KEY=VALUE")


def test_json_errors_eval_retrieval(cli, tiny_embedder, tmp_path):
    root = make_beir(tmp_path / "beir")
    qrels = _write(root / "qrels" / "test.tsv", "q0\td0\n")
    _json_error(cli("--json", "eval", "retrieval", "--data", root, "--pipeline", f"dense:{tiny_embedder}"),
                qrels, ":1:")
    _json_error(cli("--json", "eval", "retrieval", "--data", root, "--pipeline", "bm25:x"), "bm25:x")


def test_json_errors_config_show(cli):
    _json_error(cli("--json", "config", "show", "embd"), "did you mean 'embed'")


def test_json_doctor_reports_failed_checks(cli, tmp_path):
    config = _write(tmp_path / "c.yaml", "train:\n  learning_rate: fast\n")
    code, out, err = cli("--json", "doctor", "--config", config)
    payload = json.loads(out)
    assert code == 2 and err == "" and payload["ok"] is False
    (failed,) = [c for c in payload["checks"] if not c["ok"]]
    assert failed["name"] == "config" and str(config) in failed["detail"] and "line 2" in failed["detail"]


# -------------------------------------------------------------------------------------------- run directories


def _existing_run(tmp_path) -> tuple[Path, dict[str, str]]:
    run_dir = tmp_path / "run"
    files = {"config.yaml": "old: config\n", "final/modules.json": "[]", "eval_after.json": '{"metrics": {}}',
             "checkpoints/checkpoint-2/.complete": ""}
    for name, text in files.items():
        _write(run_dir / name, text)
    return run_dir, files


def _snapshot(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): p.read_text() for p in sorted(run_dir.rglob("*")) if p.is_file()}


BAD_RUN_INPUTS = {
    "malformed_data": lambda tmp, model, data: [f"data.train={_write(tmp / 'bad.jsonl', '{oops')}",
                                                f"model.name={model}"],
    "missing_data": lambda tmp, model, data: [f"data.train={tmp / 'missing.jsonl'}", f"model.name={model}"],
    "missing_model": lambda tmp, model, data: [f"data.train={data}", "model.name=/definitely/not/here"],
    "bad_value": lambda tmp, model, data: [f"data.train={data}", f"model.name={model}", "train.learning_rate=fast"],
    "unknown_key": lambda tmp, model, data: [f"data.train={data}", f"model.name={model}", "train.lerning_rate=1"],
    "incompatible_loss": lambda tmp, model, data: [f"data.train={data}", f"model.name={model}", "loss=cosent"],
    "empty_model_folder": lambda tmp, model, data: [f"data.train={data}",
                                                    f"model.name={_write(tmp / 'm' / 'x', '').parent}"],
}


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]], ids=["plain", "overwrite", "resume"])
@pytest.mark.parametrize("case", sorted(BAD_RUN_INPUTS))
def test_failed_run_keeps_the_existing_run_dir(cli, case, flags, tiny_embedder, pairs_file, tmp_path):
    run_dir, _ = _existing_run(tmp_path)
    before = _snapshot(run_dir)
    code, _, err = cli("train", "embed", *BAD_RUN_INPUTS[case](tmp_path, tiny_embedder, pairs_file),
                       f"output.dir={run_dir}", *flags)
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "run directory exists" not in err  # the input is blamed, found before the run directory is touched
    assert _snapshot(run_dir) == before


def test_overwrite_with_a_broken_model_keeps_the_old_run(cli, pairs_file, tmp_path):
    run_dir, _ = _existing_run(tmp_path)
    before = _snapshot(run_dir)
    model = _write(tmp_path / "broken-model" / "config.json", "{ not json").parent
    one_line_error(cli("train", "embed", f"data.train={pairs_file}", f"model.name={model}", f"output.dir={run_dir}",
                       "--overwrite"), model)
    assert _snapshot(run_dir) == before


def test_overwrite_with_bad_loss_args_keeps_the_old_run(cli, pairs_file, tiny_embedder, tmp_path):
    run_dir, _ = _existing_run(tmp_path)
    before = _snapshot(run_dir)
    one_line_error(cli("train", "embed", f"data.train={pairs_file}", f"model.name={tiny_embedder}",
                       f"output.dir={run_dir}", "loss_args={no_such_arg: 1}", "--overwrite"), "no_such_arg")
    assert _snapshot(run_dir) == before


def test_failure_after_model_load_leaves_no_run_dir(cli, pairs_file, tiny_embedder, tmp_path):
    run_dir = tmp_path / "run"
    one_line_error(cli("train", "embed", f"data.train={pairs_file}", f"model.name={tiny_embedder}",
                       f"output.dir={run_dir}", "matryoshka_dims=[64]"), "matryoshka_dims")
    assert not run_dir.exists()


def test_output_dir_is_a_file(cli, pairs_file, tiny_embedder, tmp_path):
    target = _write(tmp_path / "notes.txt", "keep me")
    one_line_error(cli("train", "embed", f"data.train={pairs_file}", f"model.name={tiny_embedder}",
                       f"output.dir={target}"), target)
    assert target.read_text() == "keep me"


# --------------------------------------------------------------------------------------- text taken as markup


def test_brackets_in_a_path_are_shown(cli, tmp_path):
    missing = tmp_path / "data[v2].jsonl"
    one_line_error(cli("data", "validate", missing), missing)


def test_markup_in_a_field_name_does_not_crash(cli, tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"[/x]": "a", "y": "b"}\n')
    one_line_error(cli("data", "validate", path), path, "[/x]")


# ------------------------------------------------------------------------------------- outputs of the wrong kind

@pytest.mark.parametrize("command", ["data chunk", "data mine", "eval retrieval", "eval rag", "data synth",
                                     "export langchain"])
def test_an_output_of_the_wrong_kind_is_refused_before_the_work(cli, pairs_file, tiny_embedder, tmp_path, command):
    beir = make_beir(tmp_path / "beir")
    docs = _write(tmp_path / "docs" / "a.txt", "Statins lower cholesterol.").parent
    chunks = _write(tmp_path / "chunks.jsonl", json.dumps({"id": "c1", "text": "Statins lower cholesterol.",
                                                           "source": "a.txt"}) + "\n")
    folder, file = tmp_path / "a-folder", _write(tmp_path / "a-file.txt", "keep me")
    folder.mkdir()
    down = ["--generator", "http://127.0.0.1:9/v1", "--generator-model", "m"]  # never reached
    args, out, kind = {
        "data chunk": (["data", "chunk", docs, "--embedder", tiny_embedder, "--out"], folder, "is a folder"),
        "data mine": (["data", "mine", pairs_file, "--out"], folder, "is a folder"),
        "eval retrieval": (["eval", "retrieval", "--data", beir, "-p", "bm25", "--out"], file, "is a file"),
        "eval rag": (["eval", "rag", "--data", beir, "-p", "bm25", "--no-generate", "--out"], file, "is a file"),
        "data synth": (["data", "synth", chunks, *down, "--out"], file, "is a file"),
        "export langchain": (["export", "langchain", tmp_path / "no-index"], file, "is a file"),
    }[command]
    one_line_error(cli(*args, out), out, kind)
    assert file.read_text() == "keep me" and list(folder.iterdir()) == []  # nothing written, nothing left behind
    one_line_error(cli(*args, file / "below"), f"{file} is a file, so nothing can be written below it")
