"""Late interaction: token-vector storage (int8, fp16), MaxSim, `train multivector` (pairs and distillation), the
`+maxsim:` spec in `eval retrieval`, and an index with token vectors through build, query, add, delete and damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import toy_pairs
from tests.unit.test_chunk import error_line
from tests.unit.test_cli import make_beir
from tests.unit.test_index import all_chunks, ask, build, make_docs


@pytest.fixture(scope="session")
def _tiny_multivector_master(_tiny_embedder_master, tmp_path_factory) -> Path:
    """The tiny embedder's encoder with a fresh 16-wide token projection, saved as a MultiVectorEncoder."""
    from ragtune.models.device import Placement
    from ragtune.models.load import load_multivector
    from tests.conftest import torch_seed

    torch_seed()
    model = load_multivector(str(_tiny_embedder_master), Placement("cpu", "fp32", "tests"), new_head=True, dim=16,
                             query_length=16, document_length=48)
    out = tmp_path_factory.mktemp("models") / "tiny-multivector"
    model.save_pretrained(str(out))
    return out


@pytest.fixture
def tiny_multivector(_tiny_multivector_master) -> str:
    return str(_tiny_multivector_master)


def _cpu():
    from ragtune.models.device import Placement

    return Placement("cpu", "fp32", "tests")


# ------------------------------------------------------------------------------------------------ storage, MaxSim
@pytest.mark.parametrize("dtype, tolerance", [("int8", 0.01), ("fp16", 1e-3)])
def test_token_vectors_round_trip(tmp_path, dtype, tolerance):
    from ragtune.retrieval.maxsim import TokenVectors

    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 1, 5, 2)]
    chunks = [c / np.linalg.norm(c, axis=1, keepdims=True) for c in chunks]
    stored = TokenVectors.quantize(chunks, dtype)
    assert len(stored) == 4 and stored.dtype == dtype
    assert stored.nbytes < sum(c.nbytes for c in chunks) * (0.5 if dtype == "int8" else 0.75) + 200
    stored.save(tmp_path / "t")
    loaded = TokenVectors.load(tmp_path / "t")
    for i, chunk in enumerate(chunks):
        np.testing.assert_allclose(loaded.get(i), chunk, atol=tolerance)
    picked = TokenVectors.concat([loaded.take([2, 0]), TokenVectors.quantize(chunks[1:2], dtype)])
    assert len(picked) == 3
    for i, want in enumerate([chunks[2], chunks[0], chunks[1]]):
        np.testing.assert_allclose(picked.get(i), want, atol=tolerance)
    assert len(loaded.take([])) == 0


def test_maxsim_is_the_sum_of_best_token_matches():
    from ragtune.retrieval.maxsim import maxsim_scores

    rng = np.random.default_rng(1)
    query = rng.normal(size=(4, 6)).astype(np.float32)
    docs = [rng.normal(size=(n, 6)).astype(np.float32) for n in (5, 1, 7)]
    expected = [sum(max(float(q @ t) for t in d) for q in query) for d in docs]
    np.testing.assert_allclose(maxsim_scores(query, docs), expected, rtol=1e-5)
    np.testing.assert_allclose(maxsim_scores(query, [docs[0], np.zeros((0, 6), np.float32)]), [expected[0], 0.0],
                               rtol=1e-5)
    assert maxsim_scores(query, []).shape == (0,)


def test_a_multivector_model_gives_unit_token_vectors_and_ranks_its_own_text_first(tiny_multivector):
    from ragtune.models.load import load_multivector
    from ragtune.retrieval.maxsim import MaxSimReranker

    scorer = MaxSimReranker(load_multivector(tiny_multivector, _cpu()), _cpu())
    docs = [r["document"] for r in toy_pairs()[:6]]
    vectors = scorer.encode_documents(docs)
    assert all(v.shape[1] == 16 and v.shape[0] > 1 for v in vectors)
    np.testing.assert_allclose(np.linalg.norm(vectors[0], axis=1), 1.0, atol=1e-4)
    scores = scorer.score(docs[2], docs)
    assert int(np.argmax(scores)) == 2


def test_a_plain_embedder_is_not_a_late_interaction_model(tiny_embedder):
    from ragtune.errors import ModelError
    from ragtune.models.load import load_multivector

    with pytest.raises(ModelError, match="not a late-interaction model"):
        load_multivector(tiny_embedder, _cpu())


def test_the_maxsim_spec_parses_and_a_bad_one_names_the_column():
    from ragtune.errors import ConfigError
    from ragtune.retrieval.spec import parse_spec

    spec = parse_spec("hybrid(bm25,dense:m)+maxsim:runs/mv/final@20")
    assert (spec.second, spec.reranker, spec.rerank_k) == ("maxsim", "runs/mv/final", 20)
    assert spec.models() == [("dense", "m"), ("maxsim", "runs/mv/final")]
    assert parse_spec("bm25+rerank:ce").second == "rerank"
    with pytest.raises(ConfigError, match="column 16"):
        parse_spec("bm25+maxsim:mv@0")


# ------------------------------------------------------------------------------------------------------- training
def tiny_multivector_overrides(model: str, out, *extra: str) -> list[str]:
    return [f"model.name={model}", f"output.dir={out}", "train.max_steps=4", "train.eval_steps=2",
            "train.save_steps=2", "train.per_device_train_batch_size=8", "train.logging_steps=1",
            "train.learning_rate=1e-3", "eval.batch_size=16", "eval.rerank_k=10", "model.dim=16",
            "model.document_length=48", "model.query_length=16", *extra]


@pytest.mark.parametrize("loss", ["mnrl", "distill"])
def test_train_multivector_end_to_end(cli, tiny_embedder, tiny_cross_encoder, pairs_file, tmp_path, loss):
    run = tmp_path / "run"
    extra = ["loss=distill", f"teacher={tiny_cross_encoder}"] if loss == "distill" else []
    code, out, err = cli("--json", "train", "multivector", *tiny_multivector_overrides(
        tiny_embedder, run, f"data.train={pairs_file}", *extra))
    assert code in (0, 1), err  # 1: the verdict on five toy queries (NO GAIN) may go either way
    assert json.loads(out)["primary_metric"] == "ndcg@10"
    before, after = (json.loads((run / f"eval_{w}.json").read_text()) for w in ("before", "after"))
    assert "ndcg@10" in before["metrics"] and "ndcg@10" in after["metrics"]
    assert (run / "final" / "modules.json").is_file()
    assert "task: multivector" in (run / "config.yaml").read_text()

    from ragtune.models.load import load_multivector
    from ragtune.retrieval.maxsim import MaxSimReranker

    scorer = MaxSimReranker(load_multivector(str(run / "final"), _cpu()), _cpu())
    assert scorer.encode_query("what about heart")[0].shape == (16,)

    beir = make_beir(tmp_path / "beir")
    spec = f"bm25+maxsim:{run / 'final'}@10"
    code, out, err = cli("--json", "eval", "retrieval", "--data", beir, "--pipeline", "bm25", "--pipeline", spec)
    assert code == 0, err
    rows = json.loads(out)["pipelines"]
    assert [r["name"] for r in rows] == ["bm25", spec]
    assert rows[1]["timings"]["rerank_p50_ms"] > 0 and 0 <= rows[1]["metrics"]["ndcg@10"] <= 1


def test_distill_without_a_teacher_is_one_line(cli, tiny_embedder, pairs_file, tmp_path):
    error_line(cli("train", "multivector", *tiny_multivector_overrides(tiny_embedder, tmp_path / "r",
                                                                       f"data.train={pairs_file}", "loss=distill")),
               "teacher")


def test_an_unknown_multivector_loss_is_one_line(cli, tiny_embedder, pairs_file, tmp_path):
    error_line(cli("train", "multivector", *tiny_multivector_overrides(tiny_embedder, tmp_path / "r",
                                                                       f"data.train={pairs_file}", "loss=mnlr")),
               "mnrl")


# ------------------------------------------------------------------------------------------ index with token vectors
@pytest.fixture
def late_index(cli, tiny_embedder, tiny_multivector, tmp_path) -> tuple[Path, Path]:
    docs = make_docs(tmp_path / "docs")
    index = tmp_path / "index"
    build(cli, docs, index, tiny_embedder, "--multivector", tiny_multivector)
    return index, docs


def _stored(index: Path):
    from ragtune.index import Index

    opened = Index(index, _cpu())
    return opened, opened.stored("multivector")


def test_an_index_stores_token_vectors_and_queries_rerank_with_them(cli, late_index, tiny_multivector):
    index, _ = late_index
    code, out, err = cli("--json", "index", "info", index)
    details = json.loads(out)
    late = details["multivector"]
    assert late["name"] == tiny_multivector and late["dtype"] == "int8" and late["dimension"] == 16
    assert late["tokens"] > details["chunks"] and late["bytes"] > 0
    opened, tokens = _stored(index)
    assert len(tokens) == details["chunks"]

    chunks = all_chunks(index)
    chunk_id, (source, text) = next(iter(chunks.items()))
    answer = ask(cli, index, text, "--rerank", "maxsim", "-k", "3")
    assert answer["sources"][0]["id"] == chunk_id
    # the stored (int8) vectors score as the model's own encoding does
    scorer = opened.maxsim()
    ids = list(chunks)[:5]
    stored = scorer.document_vectors(ids, opened.text_lookup())
    fresh = scorer.encode_documents([chunks[i][1] for i in ids])
    from ragtune.retrieval.maxsim import maxsim_scores

    query = scorer.encode_query("heart and lungs")
    np.testing.assert_allclose(maxsim_scores(query, stored), maxsim_scores(query, fresh), atol=0.05)


def test_add_and_delete_keep_the_token_vectors_in_step(cli, late_index):
    index, docs = late_index
    extra = docs.parent / "more" / "eye.txt"
    extra.parent.mkdir()
    extra.write_text("Glaucoma raises eye pressure; cataracts cloud the lens of the eye.", encoding="utf-8")
    code, out, err = cli("--json", "index", "add", index, extra)
    assert code == 0, err
    opened, tokens = _stored(index)
    assert len(tokens) == opened.size and len(opened.segments) == 2  # the new chunks' vectors in a new segment
    answer = ask(cli, index, "glaucoma eye pressure cataracts", "--rerank", "maxsim", "-k", "1")
    assert answer["sources"][0]["source"] == str(extra)
    # a kept chunk's vectors are the ones stored before
    rows = opened.rows()
    code, out, err = cli("--json", "index", "delete", index, "--source", str(docs / "heart.txt"))
    assert code == 0, err
    after, kept = _stored(index)
    assert after.size < opened.size and len(kept) == len(tokens)  # a delete writes no token vectors, it marks
    assert after.deleted == opened.size - after.size
    moved = next(i for i in after.rows() if i in rows)
    np.testing.assert_array_equal(kept.get(after.rows()[moved]), tokens.get(rows[moved]))


def test_maxsim_on_an_index_without_token_vectors_is_one_line(cli, tiny_embedder, tmp_path):
    docs = make_docs(tmp_path / "docs")
    build(cli, docs, tmp_path / "plain", tiny_embedder)
    error_line(cli("query", tmp_path / "plain", "heart", "--no-generate", "--rerank", "maxsim"),
               "no token vectors", "--multivector")


@pytest.mark.parametrize("case", ["missing", "truncated"])
def test_damaged_token_vectors_are_one_line(cli, late_index, case):
    from ragtune.index.store import current_version

    index, _ = late_index
    folder = current_version(index) / "s000001" / "multivector"
    if case == "missing":
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    else:
        vectors = np.load(folder / "vectors.npy")
        np.save(folder / "vectors.npy", vectors[:-3])
    error_line(cli("query", index, "heart", "--no-generate", "--rerank", "maxsim"), "multivector")


def test_a_missing_multivector_model_at_build_is_one_line(cli, tiny_embedder, tmp_path):
    docs = make_docs(tmp_path / "docs")
    error_line(cli("index", "build", docs, "--out", tmp_path / "i", "--embedder", tiny_embedder, "--multivector",
                   tmp_path / "nope"), "nope")
    assert not (tmp_path / "i" / "CURRENT").exists()


def test_fp16_token_vectors(cli, tiny_embedder, tiny_multivector, tmp_path):
    docs = make_docs(tmp_path / "docs")
    build(cli, docs, tmp_path / "i", tiny_embedder, "--multivector", tiny_multivector, "--token-dtype", "fp16")
    _, tokens = _stored(tmp_path / "i")
    assert tokens.parts[0].dtype == "fp16" and tokens.parts[0].scales is None
    error_line(cli("index", "build", docs, "--out", tmp_path / "j", "--embedder", tiny_embedder, "--multivector",
                   tiny_multivector, "--token-dtype", "int4"), "int4")


def test_serve_searches_with_maxsim_and_follows_a_new_version(late_index, tmp_path):
    import time

    import httpx

    from ragtune.index import add_to_index
    from tests.unit.test_serve import start

    index, _ = late_index
    with start(index, reranker="maxsim") as url:
        hit = httpx.post(url + "/v1/search", json={"query": "calcium bone density", "k": 2}).json()
        assert hit["results"] and "rerank_ms" in hit["timings_ms"]
        extra = tmp_path / "eye.txt"
        extra.write_text("Glaucoma raises eye pressure; cataracts cloud the lens.", encoding="utf-8")
        add_to_index(index, [str(extra)])
        time.sleep(0.5)
        hit = httpx.post(url + "/v1/search", json={"query": "glaucoma cataracts eye", "k": 1}).json()
        assert hit["results"][0]["source"] == str(extra) and hit["index_version"] == "v000002"
        scores = httpx.post(url + "/v1/rerank", json={"query": "eye", "documents": ["glaucoma eye", "bone"]})
        assert scores.status_code == 200 and len(scores.json()["results"]) == 2


def test_the_langchain_retriever_reranks_with_the_stored_vectors(late_index):
    from ragtune.integrations.langchain import RagtuneRetriever

    index, _ = late_index
    chunk_id, (source, text) = next(iter(all_chunks(index).items()))
    retriever = RagtuneRetriever.from_index(index, reranker="maxsim", k=2)
    assert retriever.pipeline.reranker.name.startswith("maxsim:") and retriever.pipeline.reranker.store is not None
    documents = retriever.invoke(text)
    assert documents[0].metadata["chunk_id"] == chunk_id and len(documents) == 2
