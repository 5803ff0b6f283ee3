"""The CLI surface: eval retrieval, data validate, doctor, --json, python -m ragtune."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import toy_pairs, write_jsonl


def make_beir(root, n_test: int = 12):
    """A small BEIR directory built from the toy pairs: each query judged relevant to its own document."""
    pairs = toy_pairs()
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": p["document"]}
                                        for i, p in enumerate(pairs)])
    write_jsonl(root / "queries.jsonl", [{"_id": f"q{i}", "text": p["query"]} for i, p in enumerate(pairs)])
    (root / "qrels").mkdir(exist_ok=True)
    for split, ids in (("test", range(n_test)), ("train", range(n_test, len(pairs)))):
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in ids))
    return root


def test_eval_retrieval_writes_results(cli, tiny_embedder, tmp_path):
    beir = make_beir(tmp_path / "beir")
    out = tmp_path / "out"
    code, stdout, err = cli("eval", "retrieval", "--data", beir, "--pipeline", f"dense:{tiny_embedder}",
                            "--out", out)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    (pipeline,) = results["pipelines"]
    assert pipeline["name"] == f"dense:{tiny_embedder}" and 0 <= pipeline["metrics"]["ndcg@10"] <= 1
    assert pipeline["queries"] == 12 and pipeline["documents"] == len(toy_pairs())
    assert "ndcg@10" in (out / "results.md").read_text()


def test_train_on_beir_with_json_output(cli, tiny_embedder, tmp_path):
    from tests.conftest import tiny_train_overrides

    beir = make_beir(tmp_path / "beir")
    code, out, err = cli("--json", "train", "embed", f"data.train={beir}",
                         *tiny_train_overrides(tiny_embedder, tmp_path / "run"), "--allow-regression")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["primary_metric"] == "ndcg@10" and set(payload["before"]) == set(payload["after"])
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "eval_split: test" in config and "num_train_epochs" in config  # every default written out


def test_data_validate_reports_format_counts_and_problems(cli, tmp_path):
    rows = toy_pairs()[:5] + [toy_pairs()[0], {"query": "", "document": "x"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    code, out, _ = cli("--json", "data", "validate", path)
    report = json.loads(out)
    assert code == 0 and report["format"] == "pairs"
    assert report["counts"]["records"] == 7 and report["counts"]["duplicates"] == 1 and report["counts"]["empty"] == 1
    assert any(f"{path}:6: duplicate of {path}:1" == p for p in report["problems"])
    assert any(f"{path}:7: empty text" in p for p in report["problems"])
    assert report["lengths"]["anchor"]["max"] >= report["lengths"]["anchor"]["mean"]


def test_data_validate_beir(cli, tmp_path):
    code, out, _ = cli("--json", "data", "validate", make_beir(tmp_path / "beir"))
    report = json.loads(out)
    assert code == 0 and report["format"] == "beir" and report["counts"]["test queries"] == 12


def test_doctor_reports_environment_and_config(cli, tmp_path, pairs_file):
    code, out, _ = cli("--json", "doctor")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 0 and {"python", "torch", "sentence_transformers", "transformers", "cpu bf16", "disk",
                          "default model"} <= set(checks)
    assert checks["default model"]["ok"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"data:\n  train: {pairs_file}\ntrain:\n  lerning_rate: 1\n")
    code, out, _ = cli("--json", "doctor", "--config", bad)
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 2 and not checks["config"]["ok"] and "did you mean 'learning_rate'" in checks["config"]["detail"]


def test_python_dash_m_and_global_flags_anywhere():
    proc = subprocess.run([sys.executable, "-m", "ragtune", "config", "show", "embed", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["key"] == "model.name"
