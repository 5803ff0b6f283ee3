"""RUN/report.html: every section there, self-contained (no URL), rebuilt and compared by `ragtune report`."""

from __future__ import annotations

import re

from tests.conftest import tiny_train_overrides, write_jsonl
from tests.unit.test_chunk import error_line
from tests.unit.test_model_cards import CHATS
from tests.unit.test_train_llm import llm_overrides
from tests.unit.test_train_rerank import tiny_rerank_overrides

COMMON = ("before-after", "training", "what-ran", "config")


def sections(path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text)  # nothing to fetch: it opens offline
    assert "<script" not in text and "<link" not in text
    assert text.count("data:image/png;base64,") >= 1
    return set(re.findall(r'<section id="([a-z-]+)">', text))


def test_an_embed_run_report_shows_curves_and_the_embedding_space(cli, tiny_embedder, pairs_file, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run),
                       "--allow-regression")
    assert code == 0, err
    report = run / "report.html"
    assert sections(report) >= {*COMMON, "embedding-space"}
    text = report.read_text()
    assert "t-SNE of" in text and "BM25 result that is not relevant" in text
    report.unlink()
    code, out, err = cli("report", run)  # rebuilt on demand
    assert code == 0, err
    assert report.is_file() and "report.html" in out

    other = tmp_path / "other"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, other),
                       "train.learning_rate=1e-4", "--allow-regression")
    assert code == 0, err
    code, out, err = cli("report", run, other)
    assert code == 0, err
    compared = other / "compare-run.html"
    assert sections(compared) >= {"after", "training"} and "run against other" in compared.read_text()


def test_rerank_and_llm_reports_show_their_own_views(cli, tiny_cross_encoder, tiny_llm, pairs_file, tmp_path):
    run = tmp_path / "rerank"
    code, _, err = cli("train", "rerank", f"data.train={pairs_file}", *tiny_rerank_overrides(tiny_cross_encoder, run),
                       "--allow-regression")
    assert code == 0, err
    assert sections(run / "report.html") >= {*COMMON, "scores"}
    llm = tmp_path / "llm"
    code, _, err = cli("train", "llm", f"data.train={write_jsonl(tmp_path / 'chat.jsonl', CHATS)}",
                       *llm_overrides(tiny_llm, llm))
    assert code == 0, err
    assert sections(llm / "report.html") >= {*COMMON, "samples"}
    assert "step 0" in (llm / "report.html").read_text()


def test_report_of_something_that_is_not_a_run_or_a_damaged_run_is_one_line(cli, tmp_path):
    from tests.unit.test_bad_input import _write

    error_line(cli("report", tmp_path), "not a finished ragtune run")
    error_line(cli("report", tmp_path / "nowhere"), "not a finished ragtune run")
    run = tmp_path / "run"
    _write(run / "config.yaml", "task: embed\n")
    _write(run / "eval_after.json", '{"metrics": {"ndcg@10": 0.5}')
    error_line(cli("report", run), "eval_after.json", "not readable", "damaged")
    _write(run / "eval_after.json", '{"split": "x"}')
    error_line(cli("report", run), "eval_after.json", "no 'metrics'")
    _write(run / "eval_after.json", '{"metrics": {"ndcg@10": 0.5}}')
    _write(run / "metrics.jsonl", '{"step": 1, "loss": 0.5}\n{"step": 2, "loss"\n')
    error_line(cli("report", run), "metrics.jsonl:2", "not readable")
    _write(run / "metrics.jsonl", b"\xff\xfe not utf-8\n")
    error_line(cli("report", run), "metrics.jsonl", "not readable")
    _write(run / "metrics.jsonl", '{"step": 1, "loss": 0.5}\n')
    error_line(cli("report", run), "eval_before.json", "no 'ndcg@10'")  # missing: no baseline to compare with
    _write(run / "eval_before.json", '{"metrics": {"ndcg@10": 0.4}}')
    _write(run / "summary.md", b"- **model**: caf\xe9\n")
    error_line(cli("report", run), "summary.md", "not readable")
