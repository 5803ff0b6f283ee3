"""`ragtune eval retrieval`: pipelines side by side, results files, fusion tuning, file inputs and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import toy_pairs, write_jsonl
from tests.unit.test_bad_input import one_line_error
from tests.unit.test_cli import make_beir

HEADLINE = ["ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100"]


def strict_json(text: str):
    """Parse JSON as other languages would: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def test_four_pipelines_side_by_side(cli, tiny_embedder, tiny_cross_encoder, tmp_path):
    beir, out = make_beir(tmp_path / "beir"), tmp_path / "out"
    hybrid = f"hybrid(bm25,dense:{tiny_embedder})"
    specs = ["bm25", f"dense:{tiny_embedder}", hybrid, f"{hybrid}+rerank:{tiny_cross_encoder}@5"]
    code, stdout, err = cli("--json", "eval", "retrieval", "--data", beir, "--out", out,
                            *[arg for spec in specs for arg in ("--pipeline", spec)])
    assert code == 0, err
    printed = strict_json(stdout)
    results = strict_json((out / "results.json").read_text())
    assert printed == results and results["dataset"] == "beir/test"
    rows = results["pipelines"]
    assert [r["name"] for r in rows] == specs
    for row in rows:
        assert all(0 <= row["metrics"][m] <= 1 for m in HEADLINE)
        assert row["metrics"]["recall@100"] == 1.0  # 48 documents: everything is retrieved
        assert row["queries"] == 12 and row["documents"] == len(toy_pairs())
        timings = row["timings"]
        assert timings["first_stage_p50_ms"] > 0 and timings["first_stage_p95_ms"] >= timings["first_stage_p50_ms"]
        assert timings["index_build_s"] >= 0
    assert [r["timings"]["rerank_p50_ms"] > 0 for r in rows] == [False, False, False, True]
    assert rows[3]["timings"]["rerank_p95_ms"] >= rows[3]["timings"]["rerank_p50_ms"]
    assert [r["fusion"] is not None for r in rows] == [False, False, True, True]
    assert rows[2]["fusion"]["method"] == "rrf" and rows[2]["fusion"]["rrf_k"] == 60

    assert rows[0]["significance"] is None
    for row in rows[1:]:
        test = row["significance"]
        assert test["against"] == 0 and test["test"] == "student" and set(test["p_values"]) == set(HEADLINE)
        assert all(p is None or 0 <= p <= 1 for p in test["p_values"].values())
        assert test["p_values"]["recall@100"] is None  # identical per-query scores: no p-value, not NaN
        assert not test["better"]["recall@100"] and not test["worse"]["recall@100"]

    markdown = (out / "results.md").read_text()
    assert markdown.startswith("# beir/test") and all(f"`{spec}`" in markdown for spec in specs)
    assert all(m in markdown for m in HEADLINE) and "paired test" in markdown
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(set(row["per_query"]) == set(rows[0]["per_query"]) for row in rows) and len(rows[0]["per_query"]) == 12
    page = (out / "results.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "http" not in page and "data:image/png;base64," in page
    assert '<section id="pipelines">' in page and '<section id="per-query">' in page
    assert "queries gained and" in page and f"<code>{specs[0]}</code>" in page


def test_human_output_and_the_baseline_alone(cli, tmp_path):
    beir, out = make_beir(tmp_path / "beir"), tmp_path / "out"
    code, stdout, err = cli("eval", "retrieval", "--data", beir, "-p", "bm25", "--out", out, "bm25.k1=1.2")
    assert code == 0, err
    assert "beir/test: 12 queries, 48 documents" in stdout and "results.md, results.png and results.html" in stdout
    (row,) = strict_json((out / "results.json").read_text())["pipelines"]
    assert row["significance"] is None and row["timings"]["rerank_p50_ms"] == 0
    assert "paired test" not in (out / "results.md").read_text()


def test_tune_fusion_records_the_tuned_parameters(cli, tiny_embedder, tmp_path):
    beir = make_beir(tmp_path / "beir")
    hybrid = f"hybrid(bm25,dense:{tiny_embedder})"
    code, stdout, err = cli("--json", "eval", "retrieval", "--data", beir, "-p", "bm25", "-p", hybrid,
                            "--tune-fusion", "--tune-split", "train", "fusion.method=wsum")
    assert code == 0, err
    fusion = strict_json(stdout)["pipelines"][1]["fusion"]
    assert fusion["method"] == "wsum" and fusion["weights"] is not None  # the default is None: equal weights
    assert len(fusion["weights"]) == 2 and all(w >= 0 for w in fusion["weights"]) and sum(fusion["weights"]) > 0

    code, stdout, err = cli("--json", "eval", "retrieval", "--data", beir, "-p", hybrid, "--tune-fusion",
                            "--tune-split", "train")
    assert code == 0, err
    fusion = strict_json(stdout)["pipelines"][0]["fusion"]
    assert fusion["method"] == "rrf" and isinstance(fusion["rrf_k"], int) and fusion["weights"] is None


def test_tune_fusion_needs_the_split_and_a_beir_dir(cli, tiny_embedder, tmp_path):
    beir = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", "bm25", "--tune-fusion"),
                   "dev.tsv", "no such qrels file", "['test', 'train']")
    one_line_error(cli("eval", "retrieval", "--corpus", beir / "corpus.jsonl", "--queries", beir / "queries.jsonl",
                       "--qrels", beir / "qrels" / "test.tsv", "-p", "bm25", "--tune-fusion"),
                   "--tune-fusion needs --data")


def test_corpus_queries_and_qrels_files(cli, tmp_path):
    beir = make_beir(tmp_path / "beir")
    code, stdout, err = cli("--json", "eval", "retrieval", "--corpus", beir / "corpus.jsonl",
                            "--queries", beir / "queries.jsonl", "--qrels", beir / "qrels" / "train.tsv",
                            "-p", "bm25")
    assert code == 0, err
    result = strict_json(stdout)
    assert result["dataset"] == "train" and result["pipelines"][0]["queries"] == len(toy_pairs()) - 12
    one_line_error(cli("eval", "retrieval", "--corpus", beir / "corpus.jsonl", "-p", "bm25"),
                   "all three of --corpus FILE --queries FILE --qrels FILE")


def test_data_and_corpus_together_is_an_error(cli, tmp_path):
    beir = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", beir, "--corpus", beir / "corpus.jsonl", "-p", "bm25"),
                   "either --data BEIR_DIR or --corpus/--queries/--qrels, not both")


def test_k_larger_than_a_tiny_corpus(cli, tiny_embedder, tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [{"_id": "a", "text": "asthma is a lung disease"},
                                        {"_id": "b", "text": "a stroke cuts blood to the brain"},
                                        {"_id": "c", "text": "calcium builds bone density"}])
    write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "what is asthma"}, {"_id": "q2", "text": "bone"}])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\nq2\tc\t1\n")
    code, stdout, err = cli("--json", "eval", "retrieval", "--data", root, "-p", "bm25", "-p",
                            f"dense:{tiny_embedder}", "-p", f"hybrid(bm25,dense:{tiny_embedder})")
    assert code == 0, err
    bm25, dense, hybrid = strict_json(stdout)["pipelines"]
    assert bm25["metrics"]["ndcg@10"] == 1.0 and bm25["metrics"]["mrr@100"] == 1.0  # by hand: both at rank 1
    assert dense["metrics"]["recall@100"] == 1.0 and hybrid["metrics"]["recall@100"] == 1.0
    assert bm25["documents"] == 3


@pytest.mark.parametrize("command", ["eval retrieval", "eval rag", "data mine"])
def test_unknown_ids_in_qrels(cli, tmp_path, command):
    beir = make_beir(tmp_path / "beir")
    qrels = beir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q999\td1\t1\nq998\td2\t1\nq1\td999\t1\n")
    args = {"eval retrieval": ["eval", "retrieval", "--data", beir, "-p", "bm25"],
            "eval rag": ["eval", "rag", "--data", beir, "-p", "bm25", "--no-generate"],
            "data mine": ["data", "mine", beir, "--split", "test", "--out", tmp_path / "mined.jsonl"]}[command]
    one_line_error(cli(*args), qrels, "2 unknown query ids (first: 'q999'",
                   "1 judgements of unknown document ids (first: 'd999'", "--unknown-ids skip")
    code, stdout, err = cli("--json", *args, "--unknown-ids", "skip")
    assert code == 0, err
    counts = {"eval retrieval": lambda out: out["pipelines"][0]["queries"],  # the known judgements survive
              "eval rag": lambda out: out["questions"],
              "data mine": lambda out: out["pairs"]}
    assert counts[command](strict_json(stdout)) == 12
    one_line_error(cli(*args, "--unknown-ids", "ignore"), "--unknown-ids 'ignore'")


def test_empty_corpus_file(cli, tmp_path):
    beir = make_beir(tmp_path / "beir")
    (beir / "corpus.jsonl").write_text("")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", "bm25"), beir / "corpus.jsonl", "empty")


def test_an_embedding_model_as_reranker(cli, tiny_embedder, tmp_path):
    beir = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", f"bm25+rerank:{tiny_embedder}"),
                   tiny_embedder, "not a cross-encoder")


def test_missing_models(cli, tiny_embedder, tmp_path):
    beir, out = make_beir(tmp_path / "beir"), tmp_path / "out"
    missing = tmp_path / "no-such-reranker"
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", "bm25", "-p", f"bm25+rerank:{missing}",
                       "--out", out), missing, "not found")
    assert not out.exists()  # checked before the first pipeline ran
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", f"hybrid(bm25,dense:{missing})"), missing,
                   "not found")


def test_bad_pipeline_specs_and_settings(cli, tiny_embedder, tmp_path):
    beir = make_beir(tmp_path / "beir")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", "hybrid(bm25,"), "--pipeline 'hybrid(bm25,'",
                   "column 13")
    one_line_error(cli("eval", "retrieval", "--data", tmp_path / "nowhere", "-p", "bm2"), "--pipeline 'bm2'")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", f"hybrid(bm25,dense:{tiny_embedder})",
                       "fusion.weights=[1,2,3]"), "fusion.weights has 3 values", "fuses 2 retrievers")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", "bm25", "fusion.method=rff"),
                   "fusion.method", "did you mean 'rrf'")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", "bm25", "bm25.language=klingon"),
                   "bm25.language", "unknown language 'klingon'")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-p", "bm25", "--stat-test", "z"), "--stat-test 'z'")


def test_pipelines_can_come_from_a_config_file(cli, tmp_path):
    beir = make_beir(tmp_path / "beir")
    config = tmp_path / "ladder.yaml"
    config.write_text("pipelines:\n  - bm25\n  - hybrid(bm25, bm25)\nbm25:\n  k1: 1.2\n")
    code, out, err = cli("--json", "eval", "retrieval", "--data", beir, "-c", config)
    assert code == 0, err
    assert [p["name"] for p in json.loads(out)["pipelines"]] == ["bm25", "hybrid(bm25, bm25)"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("bm25:\n  k1: 1.2\n")
    one_line_error(cli("eval", "retrieval", "--data", beir, "-c", empty), "no pipeline to evaluate")


def test_significance_marks_a_clear_win_and_a_clear_loss():
    from ragtune.eval.results import results_markdown
    from ragtune.eval.retrieval import PipelineResult, significance

    # 30 queries, one relevant doc each, ten candidates: the middle run has it at ranks 3 to 7, the good run first,
    # the bad run never.
    qrels = {f"q{i}": {f"rel{i}": 1} for i in range(30)}

    def run(rank):
        return {q: {(f"rel{i}" if j == rank(i) else f"x{i}-{j}"): 10.0 - j for j in range(10)}
                for i, q in enumerate(qrels)}
    middle, good, bad = run(lambda i: 2 + i % 5), run(lambda i: 0), run(lambda i: 99)
    metrics = ["ndcg@10", "recall@10"]
    tests = significance(qrels, [middle, good, bad, middle], metrics)
    assert tests[0] is None
    assert tests[1]["better"] == {"ndcg@10": True, "recall@10": False}  # recall@10 is 1.0 for both
    assert tests[1]["p_values"]["ndcg@10"] < 0.05 and tests[1]["p_values"]["recall@10"] is None
    assert tests[2]["worse"] == {"ndcg@10": True, "recall@10": True} and not any(tests[2]["better"].values())
    assert not any(tests[3]["better"].values()) and not any(tests[3]["worse"].values())  # same run: no mark

    results = [PipelineResult(name, {"ndcg@10": 0.5, "recall@10": 0.5}, significance=test)
               for name, test in zip(["middle", "good", "bad", "same"], tests)]
    rows = results_markdown(results, metrics).splitlines()
    assert "↑" not in rows[2] and "↓" not in rows[2]
    assert rows[3].count("↑") == 1 and rows[4].count("↓") == 2 and "↑" not in rows[5] and "↓" not in rows[5]
    assert "significantly better/worse than `middle`" in rows[-1]


def test_the_rerankers_first_stage_weight_is_the_one_that_ranks_best():
    # Per query the first stage ranks the relevant doc first (10 > 5 > 0: min-max 1, 0.5, 0) and the reranker puts
    # it last (0 < 0.5 < 1 for b, a). Mixed, the relevant doc scores w and `a` scores (1 - w) + 0.5 w: the relevant
    # doc is on top only for w > 2/3, so the smallest weight of the grid that ranks best is 0.7.
    from types import SimpleNamespace

    from ragtune.config.retrieval import RerankSection
    from ragtune.data.beir import IRData
    from ragtune.eval.retrieval import _tune

    queries = {f"q{i}": f"query {i}" for i in range(5)}
    corpus = {f"{name}{i}": f"{name} text {i}" for i in range(5) for name in ("rel", "a", "b")}
    first = {f"query {i}": [(f"rel{i}", 10.0), (f"a{i}", 5.0), (f"b{i}", 0.0)] for i in range(5)}
    opinion = {"rel": 0.0, "a": 1.0, "b": 0.5}

    class Scorer:
        settings = RerankSection()

        def score(self, query, documents):
            return np.array([opinion[d.split()[0]] for d in documents], dtype=np.float32)

    pipeline = SimpleNamespace(first=SimpleNamespace(search=lambda qs, k: [first[q] for q in qs]),
                               reranker=Scorer(), rerank_k=3, name="fake")
    tune = IRData(corpus, queries, {q: {f"rel{q[1:]}": 1} for q in queries}, "train")
    _tune(pipeline, tune, "ndcg@10")
    assert pipeline.reranker.settings.first_stage_weight == 0.7


def test_tune_fusion_fits_the_rerankers_first_stage_weight(cli, tiny_embedder, tiny_cross_encoder, tmp_path):
    beir = make_beir(tmp_path / "beir")
    spec = f"hybrid(bm25,dense:{tiny_embedder})+rerank:{tiny_cross_encoder}@5"
    code, out, err = cli("--json", "eval", "retrieval", "--data", beir, "-p", spec, "--tune-fusion",
                         "--tune-split", "train", "fusion.method=wsum")
    assert code == 0, err
    (row,) = json.loads(out)["pipelines"]
    assert 0.0 <= row["fusion"]["rerank_first_stage_weight"] <= 0.9 and len(row["fusion"]["weights"]) == 2
    # (the grid search itself is checked against a known answer in the test above)
