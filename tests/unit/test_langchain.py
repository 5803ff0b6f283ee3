"""LangChain: the retriever over a ragtune index, the cached embeddings, `ragtune export langchain` read back by
langchain_community's FAISS, and examples/langchain_rag.py end to end."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_chunk import error_line
from tests.unit.test_index import REPO, build, make_docs

with warnings.catch_warnings():  # langchain-community announces its sunset on import
    warnings.simplefilter("ignore")
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.documents import Document

from ragtune.integrations.langchain import RagtuneEmbeddings, RagtuneRetriever


@pytest.fixture
def index(cli, tmp_path, tiny_embedder) -> Path:
    path = tmp_path / "index"
    build(cli, make_docs(tmp_path / "docs"), path, tiny_embedder)
    return path


def test_retriever_returns_documents_with_their_sources(index, tmp_path, tiny_cross_encoder):
    from ragtune.index import Index

    retriever = RagtuneRetriever.from_index(index, k=2, first_stage="bm25")
    docs = retriever.invoke("calcium intake bone density pain")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.metadata["source"] == str(tmp_path / "docs" / "bone.pdf") and top.metadata["page"] == 1
    assert top.metadata["title"] == "Bones" and top.metadata["score"] > 0
    ragtune_index = Index(index)
    [(chunk_id, _)] = ragtune_index.search("calcium intake bone density pain", 1, "bm25")
    assert top.metadata["chunk_id"] == chunk_id and top.page_content == ragtune_index.chunks([chunk_id])[0].text
    gut = RagtuneRetriever.from_index(index, k=1, first_stage="bm25").invoke("stomach ulcer bacteria")[0]
    assert gut.metadata["id"] == "g1"  # the record's own fields travel along
    hybrid = RagtuneRetriever.from_index(index)  # hybrid, k=4 by default
    assert 1 <= len(hybrid.invoke("heart rhythm")) <= 4
    reranked = RagtuneRetriever.from_index(index, reranker=tiny_cross_encoder, k=3, rerank_k=6)
    assert len(reranked.invoke("heart rhythm")) == 3
    assert [d.metadata["chunk_id"] for d in retriever.batch(["asthma", "calcium intake bone density pain"])[1]] == \
        [d.metadata["chunk_id"] for d in docs]


def test_embeddings_cache_repeated_documents_and_log_the_hit_rate(tiny_embedder, monkeypatch, caplog):
    from ragtune.retrieval import dense

    encoded: list[str] = []
    original = dense.encode

    def spy(model, texts, *args, **kwargs):
        encoded.extend(texts)
        return original(model, texts, *args, **kwargs)

    monkeypatch.setattr(dense, "encode", spy)
    embeddings = RagtuneEmbeddings(tiny_embedder)
    caplog.set_level(logging.INFO, logger="ragtune.integrations.langchain")
    first = embeddings.embed_documents(["bone density", "skin rash", "bone density"])
    assert encoded == ["bone density", "skin rash"]  # a repeat inside one call is encoded once
    assert len(first) == 3 and first[0] == first[2] and len(first[0]) == 32
    assert np.linalg.norm(first[1]) == pytest.approx(1.0, abs=1e-3)
    assert "1 of 3 texts were cached (hit rate 33% overall)" in caplog.text
    encoded.clear()
    second = embeddings.embed_documents(["skin rash", "bone density"])
    assert encoded == [] and second == [first[1], first[0]]
    assert "2 of 2 texts were cached (hit rate 60% overall)" in caplog.text
    assert (embeddings.hits, embeddings.misses) == (3, 2)
    third = embeddings.embed_documents(["joint pain", "skin rash"])
    assert encoded == ["joint pain"] and third[1] == first[1]
    query = embeddings.embed_query("bone density")  # no prompts: a query encodes like a document
    np.testing.assert_allclose(query, first[0], atol=1e-3)
    prompted = RagtuneEmbeddings(tiny_embedder, query_prompt="query: ")
    assert not np.allclose(prompted.embed_query("bone density"), query, atol=1e-3)


def test_embeddings_take_the_models_own_prompts_as_the_index_does(tiny_embedder):
    from ragtune.integrations.langchain import RagtuneEmbeddings

    config = Path(tiny_embedder) / "config_sentence_transformers.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "prompts": {"query": "query: ", "passage": "passage: "}}))
    embeddings = RagtuneEmbeddings(tiny_embedder)  # "passage" is the document prompt's other name
    assert (embeddings.query_prompt, embeddings.document_prompt) == ("query: ", "passage: ")
    assert RagtuneEmbeddings(tiny_embedder, document_prompt="").document_prompt == ""


def test_embeddings_cache_in_a_shared_store_is_per_model(tiny_embedder, tmp_path):
    from langchain_core.stores import InMemoryByteStore

    from tests.unit.test_index import perturbed_copy

    store = InMemoryByteStore()  # stands in for a persistent ByteStore (LocalFileStore, Redis, ...)
    first = RagtuneEmbeddings(tiny_embedder, store=store)
    vectors = first.embed_documents(["bone density", "skin rash"])
    again = RagtuneEmbeddings(tiny_embedder, store=store)  # a new process with the same store and model
    assert again.embed_documents(["skin rash", "bone density"]) == [vectors[1], vectors[0]]
    assert (again.hits, again.misses) == (2, 0)
    other = RagtuneEmbeddings(perturbed_copy(tiny_embedder, tmp_path / "other"), store=store)
    assert other.embed_documents(["bone density"])[0] != vectors[0] and (other.hits, other.misses) == (0, 1)
    prompted = RagtuneEmbeddings(tiny_embedder, document_prompt="passage: ", store=store)
    prompted.embed_documents(["bone density"])
    assert (prompted.hits, prompted.misses) == (0, 1)


@pytest.mark.parametrize("segmented", [False, True])
def test_export_langchain_loads_in_faiss_with_the_same_top_hit(cli, index, tiny_embedder, tmp_path, segmented):
    from ragtune.index import Index

    if segmented:  # two segments and deleted chunks: the export holds the live chunks alone, in one FAISS index
        extra = tmp_path / "more" / "eye.txt"
        extra.parent.mkdir()
        extra.write_text("Glaucoma raises eye pressure; cataracts cloud the lens.", encoding="utf-8")
        assert cli("index", "add", index, extra)[0] == 0
        opened = Index(index)
        source = opened.id_sources()[0][1]
        opened.close()
        assert cli("index", "delete", index, "--source", source)[0] == 0
        assert Index(index).info()["segments"] == 2 and Index(index).deleted > 0

    out = tmp_path / "lc"
    code, stdout, err = cli("--json", "export", "langchain", index, out)
    assert code == 0, err
    assert json.loads(stdout) == {"langchain_faiss": str(out)}
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "index.faiss", "index.pkl"]
    readme = (out / "README.txt").read_text()
    assert "FAISS.load_local" in readme and "pickle" in readme and tiny_embedder in readme

    ragtune_index = Index(index)
    embeddings = RagtuneEmbeddings(tiny_embedder)
    store = FAISS.load_local(str(out), embeddings, allow_dangerous_deserialization=True)
    assert store.index.ntotal == ragtune_index.size
    inner = FAISS.load_local(str(out), embeddings, allow_dangerous_deserialization=True,
                             distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    questions = ["calcium intake and bone density", "asthma attack", "memory loss after a stroke", "liver enzymes",
                 "glaucoma eye pressure"]
    for question in questions:
        [(chunk_id, score)] = ragtune_index.search(question, 1, "dense")
        [doc] = store.similarity_search(question, k=1)
        assert doc.metadata["chunk_id"] == chunk_id
        assert doc.page_content == ragtune_index.chunks([chunk_id])[0].text
        assert doc.metadata["source"] == ragtune_index.chunks([chunk_id])[0].source
        [(same, similarity)] = inner.similarity_search_with_score(question, k=1)
        assert same.metadata["chunk_id"] == chunk_id and similarity == pytest.approx(score, abs=1e-3)

    error_line(cli("export", "langchain", index, out), str(out), "--overwrite")
    code, stdout, err = cli("export", "langchain", index, out, "--overwrite")
    assert code == 0, err
    assert "pickle" in stdout and (out / "index.faiss").is_file()
    error_line(cli("export", "langchain", tmp_path / "nowhere", tmp_path / "lc2"), "not a ragtune index")
    assert not (tmp_path / "lc2").exists()
    live = sorted(p.relative_to(index) for p in index.rglob("*"))
    for inside in (index, index / "v000001", index.parent):  # the index itself, a part of it, a folder holding it
        error_line(cli("export", "langchain", index, inside, "--overwrite"), "choose a folder apart from the index")
    assert sorted(p.relative_to(index) for p in index.rglob("*")) == live


def test_the_langchain_example_runs_end_to_end(index, tiny_llm, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "langchain_rag.py"), "--index", str(index),
                           "--model", tiny_llm, "--question", "what raises blood pressure?", "--k", "2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("answer:")
    sources = [line for line in lines if line.startswith("source: ")]
    assert len(sources) == 2
    assert all(line.split()[1].startswith(str(index.parent / "docs")) and "(chunk " in line for line in sources)
    assert "Traceback" not in proc.stderr


def test_embeddings_cache_in_langchains_file_store(tiny_embedder, tmp_path):
    # LangChain 1.x keeps the file store in langchain_classic; 0.3 (what pip picks beside huggingface_hub 2) in langchain
    try:
        storage = importlib.import_module("langchain_classic.storage")
    except ImportError:
        storage = pytest.importorskip("langchain.storage")
    first = RagtuneEmbeddings(tiny_embedder, store=storage.LocalFileStore(tmp_path / "cache"))
    vectors = first.embed_documents(["bone density", "skin rash"])
    assert first.embed_documents([]) == []
    again = RagtuneEmbeddings(tiny_embedder, store=storage.LocalFileStore(tmp_path / "cache"))
    assert again.embed_documents(["skin rash"]) == [vectors[1]] and (again.hits, again.misses) == (1, 0)

