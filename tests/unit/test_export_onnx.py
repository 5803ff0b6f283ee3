"""`ragtune export onnx` on the tiny models: gated exports (accepted and refused), reload through ONNX Runtime,
the backend setting, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_train_overrides
from tests.unit.test_bad_input import _write, make_beir
from tests.unit.test_chunk import error_line
from tests.unit.test_index import ask, build, make_docs

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = ["what about asthma", "a much longer passage about the heart, its rhythm and the blood pressure it keeps",
         "x"]


def fp32():
    from ragtune.models.device import choose_placement

    return choose_placement("cpu", "fp32")


def trained_run(cli, tiny_embedder, pairs_file, tmp_path) -> Path:
    """A finished tiny `train embed` run, to export."""
    run = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run),
                       "--allow-regression")
    assert code == 0, err
    return run


def export(cli, *args, runtime: str = "onnx") -> dict:
    code, out, err = cli("--json", "export", runtime, *map(str, args))
    assert code == 0, err
    return json.loads(out)


def test_an_embed_run_exports_and_ragtune_runs_the_chosen_file(cli, tiny_embedder, pairs_file, tmp_path):
    from ragtune.models.load import load_embedder
    from ragtune.models.onnx_backend import OnnxTransformer, backend_of
    from ragtune.retrieval.dense import encode

    run = trained_run(cli, tiny_embedder, pairs_file, tmp_path)
    out = tmp_path / "exported"
    record = export(cli, run, "--out", out)
    names = [row["name"] for row in record["rows"]]
    assert names[0] == "torch fp32" and "onnx fp32" in names and any(n.startswith("onnx int8") for n in names)
    assert record["primary_metric"] == "ndcg@10" and record["unit"] == "texts" and record["split"]
    assert all(row["per_second"] > 0 and row["drop"] <= 0.005 for row in record["rows"] if row["passed"])
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "ragtune_export.json").is_file()
    assert (out / "modules.json").is_file() and not (out.parent / "exported.partial").exists()
    assert "cpu" in record and record["chosen"] in ("torch", record["best"])

    torch_model = load_embedder(str(out), fp32(), backend="torch")
    onnx_model = load_embedder(str(out), fp32(), backend="onnx")
    assert isinstance(onnx_model[0].model, OnnxTransformer)
    assert backend_of(onnx_model) == f"onnx:{record['best']}" and backend_of(torch_model) == "torch"
    a, b = encode(torch_model, TEXTS, fp32()), encode(onnx_model, TEXTS, fp32())
    assert a.shape == b.shape == (3, 32)
    assert float((a * b).sum(1).min()) > 0.99  # int8 or fp32, the vectors point the same way
    assert onnx_model.encode(TEXTS).shape == (3, 32)  # sentence-transformers' own encode runs it too


@pytest.mark.parametrize("runtime,file,same", [("onnx", "model.onnx", 3), ("openvino", "openvino_model.xml", 2)])
def test_an_index_built_with_an_exported_embedder_searches_through_it(cli, tiny_embedder, tmp_path, runtime, file,
                                                                      same):
    from ragtune.index.reader import Index
    from ragtune.models.onnx_backend import backend_of

    if runtime == "openvino":
        pytest.importorskip("openvino")
        pytest.importorskip("nncf")
    out = tmp_path / "exported"
    export(cli, tiny_embedder, "--out", out, "--eval", make_beir(tmp_path / "beir"), "--quantize", "none",
           runtime=runtime)
    docs, index = make_docs(tmp_path / "docs"), tmp_path / "index"
    build(cli, docs, index, out)
    assert backend_of(Index(index).dense().model) == f"{runtime}:{file}"
    forced = tmp_path / "forced"
    build(cli, docs, forced, out, "--config", _write(tmp_path / "torch.yaml", "backend: torch\n"))
    assert backend_of(Index(forced).dense().model) == "torch"
    for question in ("heart rhythm", "calcium intake", "asthma attack"):  # the same passages, in the same order
        exported_hits, torch_hits = (ask(cli, i, question, "first_stage=dense", "-k", "3")["sources"]
                                     for i in (index, forced))
        assert [h["id"] for h in exported_hits][:same] == [h["id"] for h in torch_hits][:same]  # bf16: the top 2


def test_a_cross_encoder_exports_and_reranks_as_torch_does(cli, tiny_cross_encoder, tmp_path):
    from ragtune.models.load import load_cross_encoder
    from ragtune.retrieval.rerank import Reranker

    out = tmp_path / "exported"
    record = export(cli, tiny_cross_encoder, "--out", out, "--eval", make_beir(tmp_path / "beir"),
                    "--quantize", "none")
    assert record["kind"] == "rerank" and record["unit"] == "pairs" and record["best"] == "model.onnx"
    assert [row["name"] for row in record["rows"]][-1] == "onnx fp32"
    torch_scores = Reranker(load_cross_encoder(str(out), fp32()), fp32()).score(TEXTS[0], TEXTS)
    onnx_scores = Reranker(load_cross_encoder(str(out), fp32(), backend="onnx"), fp32()).score(TEXTS[0], TEXTS)
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)


def test_the_gate_refuses_an_export_that_scores_worse_and_keeps_the_old_one(cli, tiny_embedder, tmp_path,
                                                                            monkeypatch):
    import ragtune.export.onnx as onnx_export

    beir, out = make_beir(tmp_path / "beir"), tmp_path / "exported"
    export(cli, tiny_embedder, "--out", out, "--eval", beir, "--quantize", "none")
    before = (out / "onnx" / "ragtune_export.json").read_text()
    measured = onnx_export.measure

    def worse(name, file, *args):  # the ONNX file scores 0.05 below torch on the split
        row = measured(name, file, *args)
        if file:
            row.metric = round(row.metric - 0.05, 4)
        return row

    monkeypatch.setattr(onnx_export, "measure", worse)
    code, out_text, err = cli("export", "onnx", tiny_embedder, "--out", out, "--eval", beir, "--overwrite")
    assert code == 1 and "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert "export refused" in line and "ndcg@10" in line and "torch fp32" in line and "--max-drop 0.005" in line
    assert "0.0500" in line  # the drop, beside both numbers
    assert (out / "onnx" / "ragtune_export.json").read_text() == before  # the earlier export stays
    assert not (tmp_path / "exported.partial").exists()
    # a larger allowance takes it
    assert export(cli, tiny_embedder, "--out", out, "--eval", beir, "--overwrite", "--max-drop", "0.1")["chosen"]


def test_bad_export_input_gets_one_line(cli, tiny_embedder, tmp_path):
    beir = make_beir(tmp_path / "beir")
    error_line(cli("export", "onnx", tmp_path / "nowhere", "--out", tmp_path / "o"), "nowhere")
    error_line(cli("export", "onnx", tiny_embedder, "--out", tmp_path / "o"), "not a ragtune run", "--eval")
    error_line(cli("export", "onnx", tiny_embedder, "--out", tmp_path / "o", "--eval", beir, "--quantize", "avx3"),
               "--quantize", "avx3", "avx2")
    error_line(cli("export", "onnx", tiny_embedder, "--out", tmp_path / "o", "--eval", beir, "--max-drop", "-1"),
               "--max-drop")
    error_line(cli("export", "onnx", tiny_embedder, "--out", tmp_path / "o", "--eval", tmp_path),
               "not a BEIR directory")
    _write(tmp_path / "taken" / "file.txt", "x")
    error_line(cli("export", "onnx", tiny_embedder, "--out", tmp_path / "taken", "--eval", beir), "--overwrite")
    llm_run = tmp_path / "llm-run"
    _write(llm_run / "config.yaml", "task: llm\n")
    error_line(cli("export", "onnx", llm_run, "--out", tmp_path / "o"), "'llm' run", "embedders")
    unfinished = tmp_path / "unfinished"
    _write(unfinished / "config.yaml", "task: embed\n")
    error_line(cli("export", "onnx", unfinished, "--out", tmp_path / "o"), "final", "no saved model")
    assert not (tmp_path / "o").exists()
    error_line(cli("export", "onnx", tiny_embedder, "--out", _write(tmp_path / "afile", "x") / "o", "--eval", beir),
               "is a file")


def test_an_export_never_replaces_the_run_it_comes_from(cli, tiny_embedder, pairs_file, tmp_path):
    run = trained_run(cli, tiny_embedder, pairs_file, tmp_path)
    for out in (run, tmp_path, run / "final"):
        error_line(cli("export", "onnx", run, "--out", out, "--overwrite"), "holds the model or its run")
    assert (run / "config.yaml").is_file() and (run / "final" / "modules.json").is_file()


def test_a_bad_backend_setting_is_one_line(cli, tiny_embedder, tmp_path):
    docs = make_docs(tmp_path / "docs")
    error_line(cli("index", "build", docs, "--out", tmp_path / "index", "--embedder", tiny_embedder, "--config",
                   _write(tmp_path / "bad.yaml", "backend: tensorrt\n")), "backend", "tensorrt")
    error_line(cli("index", "build", docs, "--out", tmp_path / "index", "--embedder", tiny_embedder, "--config",
                   _write(tmp_path / "onnx.yaml", "backend: onnx\n")), "no onnx export", "backend: torch")


def test_broken_exports_fail_to_load_with_one_line(cli, tiny_embedder, tmp_path):
    from ragtune.errors import ModelError
    from ragtune.models.load import load_embedder

    with pytest.raises(ModelError, match="no onnx export"):
        load_embedder(tiny_embedder, fp32(), backend="onnx")
    out = tmp_path / "exported"
    export(cli, tiny_embedder, "--out", out, "--eval", make_beir(tmp_path / "beir"), "--quantize", "none")
    (out / "onnx" / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ModelError, match="ONNX Runtime could not load it"):
        load_embedder(str(out), fp32(), backend="auto")
    (out / "onnx" / "ragtune_export.json").write_text("{", encoding="utf-8")
    with pytest.raises(ModelError, match="not a readable export record"):
        load_embedder(str(out), fp32(), backend="auto")
    assert load_embedder(str(out), fp32(), backend="torch") is not None  # torch never reads the export
