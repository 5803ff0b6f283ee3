"""`ragtune export openvino` on the tiny models: the IR and its static int8 copy gated, reloaded through OpenVINO,
the backend setting, the precision fallback, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_bad_input import _write, make_beir
from tests.unit.test_chunk import error_line
from tests.unit.test_export_onnx import TEXTS, export, fp32, trained_run
from tests.unit.test_index import make_docs

pytest.importorskip("onnx")
pytest.importorskip("openvino")
pytest.importorskip("nncf")


def export_ov(cli, *args) -> dict:
    return export(cli, *args, runtime="openvino")


def test_an_embed_run_exports_to_openvino_and_ragtune_runs_the_chosen_file(cli, tiny_embedder, pairs_file,
                                                                           tmp_path):
    from ragtune.export.openvino import INT8, PLAIN, cpu_precisions
    from ragtune.models.load import load_embedder
    from ragtune.models.onnx_backend import backend_of
    from ragtune.models.openvino_backend import OpenVinoTransformer
    from ragtune.retrieval.dense import encode

    run = trained_run(cli, tiny_embedder, pairs_file, tmp_path)
    out = tmp_path / "exported"
    record = export_ov(cli, run, "--out", out)
    precision = cpu_precisions()[0]
    names = [row["name"] for row in record["rows"]]
    assert names[0] == "torch fp32" and f"openvino {precision}" in names
    assert f"openvino int8 static ({precision})" in names
    assert record["runtime"] == "openvino" and record["out"] == str(out) and record["openvino"] != str(out)
    assert "training examples" in record["calibration"]
    assert all(row["precision"] == precision for row in record["rows"] if row["file"])
    folder = out / "openvino"
    assert (folder / PLAIN).is_file() and (folder / PLAIN).with_suffix(".bin").is_file()
    assert (folder / "ragtune_export.json").is_file() and not (folder / "openvino_model.onnx").exists()
    assert (folder / INT8).is_file() or not next(r for r in record["rows"] if r["file"] == INT8)["passed"]
    assert not (out / "onnx").exists() and record["chosen"] in ("torch", record["best"])
    assert "## OpenVINO export" in (out / "README.md").read_text(encoding="utf-8")

    torch_model = load_embedder(str(out), fp32(), backend="torch")
    ov_model = load_embedder(str(out), fp32(), backend="openvino")
    assert isinstance(ov_model[0].model, OpenVinoTransformer) and ov_model[0].model.precision == precision
    assert backend_of(ov_model) == f"openvino:{record['best']}"
    a, b = encode(torch_model, TEXTS, fp32()), encode(ov_model, TEXTS, fp32())
    assert a.shape == b.shape == (3, 32)
    assert float((a * b).sum(1).min()) > 0.98  # int8 or bf16, the vectors point the same way
    assert ov_model.encode(TEXTS).shape == (3, 32)  # sentence-transformers' own encode runs it too


def test_one_compiled_model_serves_threads_at_once(cli, tiny_embedder, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from ragtune.export.openvino import PLAIN
    from ragtune.models.load import load_embedder
    from ragtune.models.onnx_backend import Exported, attach

    out = tmp_path / "models" / "exported"  # models/ is made
    export_ov(cli, tiny_embedder, "--out", out, "--eval", make_beir(tmp_path / "beir"), "--quantize", "none")
    at_f32 = attach(load_embedder(str(out), fp32(), backend="torch"), out, Exported("openvino", PLAIN, "f32"))
    torch_model = load_embedder(str(out), fp32(), backend="torch")
    np.testing.assert_allclose(at_f32.encode(TEXTS), torch_model.encode(TEXTS), atol=1e-4)  # the IR is the model
    model = load_embedder(str(out), fp32(), backend="openvino")
    alone = [model.encode([text]) for text in TEXTS * 4]
    with ThreadPoolExecutor(4) as pool:  # each thread its own infer request: no answer lands in another's call
        together = list(pool.map(lambda text: model.encode([text]), TEXTS * 4))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_cross_encoder_exports_to_openvino_and_reranks_as_torch_does(cli, tiny_cross_encoder, tmp_path):
    from ragtune.export.openvino import INT8, PLAIN
    from ragtune.models.load import load_cross_encoder
    from ragtune.retrieval.rerank import Reranker

    out = tmp_path / "exported"
    record = export_ov(cli, tiny_cross_encoder, "--out", out, "--eval", make_beir(tmp_path / "beir"),
                       "--quantize", "int8", "--max-drop", "1")  # int8 of a random tiny model may lose
    assert record["kind"] == "rerank" and [r["name"] for r in record["rows"]][-1].startswith("openvino int8 static")
    assert "pairs of documents" in record["calibration"] and record["best"] == INT8
    assert not (out / "openvino" / PLAIN).exists() and not (out / "openvino" / PLAIN).with_suffix(".bin").exists()
    scores = Reranker(load_cross_encoder(str(out), fp32(), backend="openvino"), fp32()).score(TEXTS[0], TEXTS)
    assert len(scores) == 3 and np.isfinite(scores).all()


def test_the_gate_drops_a_refused_int8_file_and_keeps_the_plain_one(cli, tiny_embedder, tmp_path, monkeypatch):
    import ragtune.export.onnx as exporter
    from ragtune.export.openvino import INT8

    measured = exporter.measure

    def worse_int8(name, file, *args):
        row = measured(name, file, *args)
        if file == INT8:
            row.metric = round(row.metric - 0.05, 4)
        return row

    monkeypatch.setattr(exporter, "measure", worse_int8)
    out = tmp_path / "exported"
    record = export_ov(cli, tiny_embedder, "--out", out, "--eval", make_beir(tmp_path / "beir"))
    assert record["best"] == "openvino_model.xml" and record["chosen"] in ("torch", "openvino_model.xml")
    assert not (out / "openvino" / INT8).exists() and not (out / "openvino" / INT8).with_suffix(".bin").exists()


def test_a_reduced_precision_that_loses_falls_back_to_f32(cli, tiny_embedder, tmp_path, monkeypatch):
    import ragtune.export.onnx as exporter
    from ragtune.export.openvino import cpu_precisions
    from ragtune.models.load import load_embedder

    if cpu_precisions()[0] == "f32":
        pytest.skip("OpenVINO runs f32 by default on this CPU (no AVX512-BF16 or AMX): nothing to fall back from")
    measured = exporter.measure

    def worse_reduced(name, file, *args):
        row = measured(name, file, *args)
        if file and "f32" not in name:
            row.metric = round(row.metric - 0.05, 4)
        return row

    monkeypatch.setattr(exporter, "measure", worse_reduced)
    out = tmp_path / "exported"
    record = export_ov(cli, tiny_embedder, "--out", out, "--eval", make_beir(tmp_path / "beir"), "--quantize", "none")
    rows = {row["name"]: row for row in record["rows"]}
    assert not rows[f"openvino {cpu_precisions()[0]}"]["passed"] and rows["openvino f32"]["passed"]
    assert load_embedder(str(out), fp32(), backend="openvino")[0].model.precision == "f32"


def test_bad_openvino_input_gets_one_line(cli, tiny_embedder, tmp_path, monkeypatch):
    from ragtune.errors import ModelError
    from ragtune.models.load import load_embedder

    beir = make_beir(tmp_path / "beir")
    error_line(cli("export", "openvino", tiny_embedder, "--out", tmp_path / "o", "--eval", beir, "--quantize",
                   "avx2"), "--quantize", "avx2", "int8")
    error_line(cli("export", "openvino", tiny_embedder, "--out", tmp_path / "o"), "not a ragtune run", "--eval")
    with pytest.raises(ModelError, match="no openvino export"):
        load_embedder(tiny_embedder, fp32(), backend="openvino")
    onnx_out = tmp_path / "as-onnx"
    export(cli, tiny_embedder, "--out", onnx_out, "--eval", beir, "--quantize", "none")
    docs = make_docs(tmp_path / "docs")
    error_line(cli("index", "build", docs, "--out", tmp_path / "index", "--embedder", onnx_out, "--config",
                   _write(tmp_path / "ov.yaml", "backend: openvino\n")), "an onnx export, not an openvino one",
               "backend: auto or onnx")
    out = tmp_path / "exported"
    export_ov(cli, tiny_embedder, "--out", out, "--eval", beir, "--quantize", "none")
    (out / "openvino" / "openvino_model.xml").write_text("<net>not an IR", encoding="utf-8")
    with pytest.raises(ModelError, match="OpenVINO could not load it"):
        load_embedder(str(out), fp32(), backend="auto")
    assert load_embedder(str(out), fp32(), backend="torch") is not None
    monkeypatch.setitem(__import__("sys").modules, "nncf", None)  # nncf not installed
    error_line(cli("export", "openvino", tiny_embedder, "--out", tmp_path / "o2", "--eval", beir), "nncf",
               "pip install")
    assert not (tmp_path / "o2").exists()


def test_calibration_reads_every_training_format_and_never_the_gate_split(tmp_path):
    from ragtune.data.beir import load_beir
    from ragtune.data.formats import Examples
    from ragtune.export.gate import CALIBRATION_SIZE, calibration_data

    triplets = Examples("triplets", [], [{"anchor": f"q{i}", "positive": f"p{i}", "negative_1": f"n{i}",
                                          "negative_2": f"m{i}"} for i in range(200)], [])
    texts, source = calibration_data("embed", triplets, None)
    assert len(texts) == CALIBRATION_SIZE and "from 75 training examples" in source  # 4 texts each
    pairs, _ = calibration_data("rerank", triplets, None)
    assert {doc[0] for _, doc in pairs} == {"p", "n", "m"}  # negatives too, not only positives
    scored = Examples("scored_pairs", [], [{"sentence1": "a question", "sentence2": f"a passage {i}", "score": i % 2}
                                           for i in range(10)], [])
    texts, source = calibration_data("embed", scored, None)
    assert len(texts) == 20 and "a question" in texts and "from 10 training examples" in source
    assert calibration_data("rerank", scored, None)[0][0][0] == "a question"

    ir = load_beir(make_beir(tmp_path / "beir"), "test")  # judges d0-d2 with q0-q2
    judged = {ir.corpus[d] for docs in ir.qrels.values() for d in docs}
    docs, source = calibration_data("embed", None, ir)
    assert docs and not set(docs) & judged and "do not judge" in source
    pairs, source = calibration_data("rerank", None, ir)
    assert pairs and not {doc for _, doc in pairs} & judged and not {q for q, _ in pairs} & set(ir.queries.values())
