"""The main job on the packaged MiniLM and the embedded PubMedQA: it must improve, and its model must load
in sentence-transformers and in LangChain."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not beside the repo")]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> Path:
    from ragtune.cli.main import run

    cwd = tmp_path_factory.mktemp("quickstart")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        assert run(["-q", "quickstart"]) == 0
    finally:
        os.chdir(old)
    (run_dir,) = (cwd / "runs").iterdir()
    return run_dir


def test_quickstart_improves_on_the_base_model(quickstart_run):
    before = json.loads((quickstart_run / "eval_before.json").read_text())["metrics"]
    after = json.loads((quickstart_run / "eval_after.json").read_text())["metrics"]
    assert 0.80 < before["ndcg@10"] < 0.88  # the published zero-shot figure is about 0.84
    assert after["ndcg@10"] > before["ndcg@10"]
    summary = (quickstart_run / "summary.md").read_text()
    assert "improved" in summary and "; significant: p = " in summary  # the paired test over the 500 test queries


def test_final_loads_in_sentence_transformers(quickstart_run):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(quickstart_run / "final"), device="cpu")
    assert model.encode(["Do statins reduce mortality?"]).shape == (1, 384)


def test_final_loads_in_langchain(quickstart_run):
    from langchain_huggingface import HuggingFaceEmbeddings

    embeddings = HuggingFaceEmbeddings(model_name=str(quickstart_run / "final"), model_kwargs={"device": "cpu"})
    vector = embeddings.embed_query("Do statins reduce mortality?")
    assert len(vector) == 384
