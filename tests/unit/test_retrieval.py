"""The retrieval stack: BM25, dense FAISS indexes and the embedding cache, fusion, pipeline specs, the reranker."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from ragtune.config.base import PromptsSection
from ragtune.config.retrieval import BM25Section, DenseSection, FusionSection, RerankSection
from ragtune.errors import ConfigError, DataError
from ragtune.models.device import Placement
from tests.conftest import toy_pairs

CPU = Placement("cpu", "fp32", "tests: exact fp32 on CPU")

CORPUS = {"run": "the athlete runs every morning in the park for health",
          "cook": "she cooks pasta with tomato sauce for health",
          "sleep": "cats sleep most of the day for health",
          "car": "the mechanic repaired the car engine for health"}


def toy_corpus() -> tuple[list[str], dict[str, str]]:
    """The toy pairs as queries and a corpus: query i's own document is d{i}."""
    pairs = toy_pairs()
    return [p["query"] for p in pairs], {f"d{i}": p["document"] for i, p in enumerate(pairs)}


# ------------------------------------------------------------------------------------------------------------ BM25

def bm25(corpus=CORPUS, **settings):
    from ragtune.retrieval.bm25 import BM25Retriever

    return BM25Retriever.build(corpus, BM25Section(**settings))


def ids(hits) -> list[str]:
    return [d for d, _ in hits]


def test_bm25_ranks_the_matching_document_first():
    retriever = bm25()
    hits = retriever.search(["mechanic car engine", "pasta tomato", "cats sleeping"], 2)
    assert [h[0][0] for h in hits] == ["car", "cook", "sleep"]
    assert all(len(h) <= 2 for h in hits)
    assert all(h[0][1] > h[1][1] for h in hits if len(h) == 2)  # best first


def test_bm25_stemming_matches_word_forms():
    # "running" occurs nowhere; stemmed, it is "run", as is "runs" in the athlete document.
    assert ids(bm25().search(["running"], 4)[0]) == ["run"]
    assert bm25(stemming=False).search(["running"], 4) == [[]]
    assert ids(bm25().search(["cooking"], 4)[0]) == ["cook"]


def test_bm25_stopwords_only_query_gets_no_hits():
    assert bm25().search(["the of in", "with for the"], 3) == [[], []]
    # Without the stopword list, "the" is an ordinary term found in two documents.
    assert sorted(ids(bm25(stopwords=False).search(["the"], 4)[0])) == ["car", "run", "sleep"]


def test_bm25_k_larger_than_the_corpus_returns_the_whole_corpus_ranked():
    retriever = bm25()
    (hits,) = retriever.search(["health athlete"], 100)  # "health" is in every document
    assert len(hits) == len(CORPUS) and hits[0][0] == "run"
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    with pytest.raises(DataError, match="k must be a positive"):
        retriever.search(["health"], 0)


def test_bm25_empty_corpus_is_a_data_error():
    with pytest.raises(DataError, match="corpus is empty"):
        bm25({})
    with pytest.raises(DataError, match="no indexable words"):
        bm25({"a": "the of and", "b": ""})


def test_bm25_save_load_round_trip_without_pickle(tmp_path):
    from ragtune.retrieval.bm25 import BM25Retriever

    queries, corpus = toy_corpus()
    retriever = bm25(corpus, k1=1.2, b=0.6)
    retriever.save(tmp_path / "bm25")
    loaded = BM25Retriever.load(tmp_path / "bm25")
    assert loaded.doc_ids == retriever.doc_ids and loaded.settings == retriever.settings
    assert loaded.search(queries, 10) == retriever.search(queries, 10)
    files = [p for p in (tmp_path / "bm25").rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix in (".pkl", ".pickle", ".pt", ".bin")]
    for array in [p for p in files if p.suffix == ".npy"]:
        np.load(array, allow_pickle=False)  # plain arrays only
    with pytest.raises(DataError, match="not a saved ragtune BM25 index"):
        BM25Retriever.load(tmp_path)


def test_bm25_unknown_language_is_a_config_error():
    from ragtune.config import load_config

    with pytest.raises(ConfigError, match="bm25.language") as error:
        load_config("retrieval", None, ["bm25.language=klingon"])
    assert "unknown language 'klingon'" in str(error.value) and "german" in str(error.value)
    with pytest.raises(ConfigError, match="did you mean 'german'"):
        load_config("retrieval", None, ["bm25.language=germn"])
    assert load_config("retrieval", None, ["bm25.language=german"]).bm25.language == "german"


def test_bm25_german_stems_and_drops_german_stopwords():
    german = {"haus": "Die alten Häuser stehen am Fluss", "auto": "Das Auto fährt schnell über die Brücke",
              "katze": "Eine Katze schläft auf dem Sofa"}
    retriever = bm25(german, language="german")
    haus, stopwords, katzen = retriever.search(["Haus", "die und das", "Katzen"], 3)
    assert ids(haus) == ["haus"] and ids(katzen) == ["katze"]  # Häuser -> haus, Katzen -> katz
    assert stopwords == []
    # The English settings neither stem German plurals nor know German stopwords.
    assert bm25(german).search(["Haus", "die und das"], 3)[0] == []
    assert bm25(german).search(["die und das"], 3)[0] != []


# ----------------------------------------------------------------------------------------------------------- dense

@pytest.fixture
def embedder(tiny_embedder):
    from ragtune.models.load import load_embedder

    return load_embedder(tiny_embedder, CPU)


def dense(corpus, model, path=None, **settings):
    from ragtune.retrieval.dense import DenseRetriever

    return DenseRetriever.build(corpus, model, CPU, DenseSection(**settings), model_path=path)


@pytest.mark.parametrize("index", ["hnsw", "ivf"])
def test_dense_approximate_indexes_agree_with_flat_on_top_1(embedder, index):
    queries, corpus = toy_corpus()
    exact = dense(corpus, embedder, cache=False).search(queries, 5)
    approx = dense(corpus, embedder, cache=False, index=index).search(queries, 5)
    assert [h[0][0] for h in approx] == [h[0][0] for h in exact]
    np.testing.assert_allclose([h[0][1] for h in approx], [h[0][1] for h in exact], atol=1e-5)
    assert sum(h[0][0] == f"d{i}" for i, h in enumerate(exact)) > len(queries) // 3  # the toy task is learnable


def test_dense_scores_are_cosine_similarities(embedder):
    queries, corpus = toy_corpus()
    (hits,) = dense(corpus, embedder, cache=False).search(queries[:1], 100)
    assert len(hits) == len(corpus)  # k beyond the corpus: all of it
    q = embedder.encode(queries[:1], normalize_embeddings=True)
    docs = embedder.encode([corpus[d] for d, _ in hits], normalize_embeddings=True)
    np.testing.assert_allclose([s for _, s in hits], (docs @ q.T)[:, 0], atol=1e-5)


def test_a_dot_product_model_ranks_by_raw_dot_products(embedder):
    queries, corpus = toy_corpus()
    embedder.similarity_fn_name = "dot"  # as config_sentence_transformers.json says for a dot-product model
    (hits,) = dense(corpus, embedder, cache=False).search(queries[:1], 100)
    q = embedder.encode(queries[:1], normalize_embeddings=False)
    docs = embedder.encode([corpus[d] for d, _ in hits], normalize_embeddings=False)
    assert not np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-3)  # the lengths count
    np.testing.assert_allclose([s for _, s in hits], (docs @ q.T)[:, 0], rtol=1e-4, atol=1e-4)


def test_dense_empty_corpus_is_a_data_error(embedder):
    with pytest.raises(DataError, match="corpus is empty"):
        dense({}, embedder)


def count_encodes(monkeypatch, tmp_path) -> list[int]:
    """Use a private embedding cache and record the size of every document encoding that really runs."""
    import ragtune.retrieval.dense as dense_module

    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    real_encode, calls = dense_module.encode, []

    def counting_encode(model, texts, *args, **kwargs):
        calls.append(len(texts))
        return real_encode(model, texts, *args, **kwargs)

    monkeypatch.setattr(dense_module, "encode", counting_encode)
    return calls


def test_embedding_cache_hits_on_the_same_model_and_corpus(embedder, tiny_embedder, tmp_path, monkeypatch):
    from ragtune.retrieval.cache import EmbeddingCache

    calls = count_encodes(monkeypatch, tmp_path)
    queries, corpus = toy_corpus()
    first = dense(corpus, embedder, tiny_embedder)
    assert calls == [len(corpus)]
    assert len(list((tmp_path / "cache" / "embeddings").rglob("*.npy"))) == 1

    second = dense(corpus, embedder, tiny_embedder)  # loads from the cache: no encoding
    assert calls == [len(corpus)]
    assert second.search(queries, 5) == first.search(queries, 5)
    cache = EmbeddingCache()
    assert cache.get(second._cache_key(list(corpus.values())), len(corpus)) is not None and cache.hits == 1

    dense({**corpus, "extra": "a new document about lungs"}, embedder, tiny_embedder)  # changed corpus: a miss
    assert calls == [len(corpus), len(corpus) + 1]
    dense(corpus, embedder, None)  # no model path: nothing to key the cache on, so it is not used
    assert len(calls) == 3


def test_embedding_cache_misses_when_the_weights_change(embedder, tiny_embedder, tmp_path, monkeypatch):
    import torch

    calls = count_encodes(monkeypatch, tmp_path)
    _, corpus = toy_corpus()
    before = dense(corpus, embedder, tiny_embedder)
    dense(corpus, embedder, tiny_embedder)
    assert len(calls) == 1
    key = before._cache_key(list(corpus.values()))
    with torch.no_grad():
        next(embedder.parameters()).add_(0.5)
    embedder.save_pretrained(tiny_embedder)  # same path, new weights
    after = dense(corpus, embedder, tiny_embedder)
    assert len(calls) == 2  # a miss: encoded again
    assert after._cache_key(list(corpus.values())) != key
    dense(corpus, embedder, tiny_embedder, prompts={"document": "passage: "})  # another prefix: another key
    assert len(calls) == 3


def test_embedding_cache_ignores_a_damaged_file(embedder, tiny_embedder, tmp_path, monkeypatch):
    calls = count_encodes(monkeypatch, tmp_path)
    queries, corpus = toy_corpus()
    good = dense(corpus, embedder, tiny_embedder).search(queries, 3)
    (path,) = (tmp_path / "cache" / "embeddings").rglob("*.npy")
    path.write_bytes(b"not an array")
    assert dense(corpus, embedder, tiny_embedder).search(queries, 3) == good
    assert len(calls) == 2  # recomputed, not trusted


def test_dense_uses_the_models_own_prompts_unless_configured(embedder):
    from ragtune.retrieval.dense import DenseRetriever

    embedder.prompts = {"query": "query: ", "document": "passage: "}
    own = DenseRetriever(embedder, CPU, DenseSection())
    assert (own.query_prompt, own.document_prompt) == ("query: ", "passage: ")
    configured = DenseRetriever(embedder, CPU, DenseSection(prompts=PromptsSection(query="q> ")))
    assert (configured.query_prompt, configured.document_prompt) == ("q> ", "passage: ")

    def unit(texts):
        return embedder.encode(texts, normalize_embeddings=True)

    text = "heart rhythm and cholesterol"
    np.testing.assert_allclose(own.encode_queries([text]), unit(["query: " + text]), atol=1e-5)
    np.testing.assert_allclose(configured.encode_queries([text]), unit(["q> " + text]), atol=1e-5)
    np.testing.assert_allclose(own.encode_documents([text]), unit(["passage: " + text]), atol=1e-5)
    assert not np.allclose(own.encode_queries([text]), unit([text]), atol=1e-4)  # the prompt changed the vector

    embedder.prompts = {"query": "query: ", "passage": "p: "}  # the E5-style name for documents
    assert DenseRetriever(embedder, CPU).document_prompt == "p: "


def test_dense_index_save_and_load(embedder, tmp_path):
    from ragtune.retrieval.dense import DenseRetriever

    queries, corpus = toy_corpus()
    built = dense(corpus, embedder, cache=False, index="hnsw")
    built.save(tmp_path / "index")
    assert (tmp_path / "index" / "faiss.index").is_file()
    loaded = DenseRetriever(embedder, CPU)
    loaded.load_index(tmp_path / "index", list(corpus))
    assert loaded.index.ntotal == len(corpus)
    assert loaded.search(queries, 5) == built.search(queries, 5)
    with pytest.raises(DataError, match="no faiss.index"):
        DenseRetriever(embedder, CPU).load_index(tmp_path / "nothing", list(corpus))


# ---------------------------------------------------------------------------------------------------------- fusion

def random_rankings(rng: random.Random, n_retrievers: int, n_queries: int):
    """`per[r][q]`: retriever r's hits for query q, with random scores on different scales."""
    per = []
    for r in range(n_retrievers):
        queries = []
        for _ in range(n_queries):
            docs = rng.sample([f"d{j}" for j in range(30)], rng.randint(3, 20))
            hits = [(d, rng.uniform(-3, 3) * (r + 1) * 10) for d in docs]
            queries.append(sorted(hits, key=lambda h: -h[1]))
        per.append(queries)
    return per


def assert_same_as_ranx(ours, per, **ranx_args):
    from ranx import Run
    from ranx import fuse as ranx_fuse

    runs = [Run({f"q{i}": dict(hits) for i, hits in enumerate(queries)}) for queries in per]
    reference = ranx_fuse(runs, **ranx_args).to_dict()
    for i, hits in enumerate(ours):
        expected = reference[f"q{i}"]
        assert sorted(d for d, _ in hits) == sorted(expected)
        np.testing.assert_allclose([s for _, s in hits], [expected[d] for d, _ in hits], atol=1e-6)
        # The same rank order: ranx's scores fall along our ranking (RRF ties may differ in the last bit only).
        assert all(expected[a] >= expected[b] - 1e-9 for (a, _), (b, _) in itertools.pairwise(hits))


@pytest.mark.parametrize("seed", [0, 1])
def test_rrf_equals_ranx(seed):
    from ragtune.retrieval.fusion import fuse

    per = random_rankings(random.Random(seed), 3, 8)
    assert_same_as_ranx(fuse(per, FusionSection(method="rrf", rrf_k=20), 1000), per, method="rrf",
                        params={"k": 20})


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_min_max_sum_equals_ranx(seed):
    from ragtune.retrieval.fusion import fuse

    per = random_rankings(random.Random(seed), 3, 8)
    settings = FusionSection(method="wsum", norm="min-max", weights=[0.2, 1.0, 3.5])
    assert_same_as_ranx(fuse(per, settings, 1000), per, method="wsum", norm="min-max",
                        params={"weights": [0.2, 1.0, 3.5]})


def test_fusion_by_hand():
    from ragtune.retrieval.fusion import fuse_one

    a, b = [("x", 9.0), ("y", 5.0), ("z", 1.0)], [("y", 0.8), ("w", 0.4)]
    rrf = fuse_one([a, b], FusionSection(rrf_k=60), 10)
    assert rrf == [("y", pytest.approx(1 / 62 + 1 / 61)), ("x", pytest.approx(1 / 61)), ("w", pytest.approx(1 / 62)),
                   ("z", pytest.approx(1 / 63))]
    # min-max: a -> x 1, y 0.5, z 0; b -> y 1, w 0. Weighted 1 and 2: y 0.5 + 2, x 1, w 0, z 0 (ties by id).
    wsum = fuse_one([a, b], FusionSection(method="wsum", weights=[1, 2]), 3)
    assert wsum == [("y", pytest.approx(2.5)), ("x", pytest.approx(1.0)), ("w", pytest.approx(0.0))]
    assert fuse_one([[], []], FusionSection(), 5) == []
    assert fuse_one([a, []], FusionSection(), 2) == [("x", pytest.approx(1 / 61)), ("y", pytest.approx(1 / 62))]


def test_a_ranx_only_method_runs_through_ranx():
    from ragtune.retrieval.fusion import fuse

    per = random_rankings(random.Random(3), 2, 5)
    fused = fuse(per, FusionSection(method="combmnz", norm="min-max"), 1000)
    assert_same_as_ranx(fused, per, method="mnz", norm="min-max")  # ranx's name for CombMNZ
    assert len(fuse(per, FusionSection(method="combmnz"), 3)[0]) == 3
    assert fuse(per, FusionSection(method="isr"), 4)[0]


def test_a_method_needing_fitted_parameters_is_refused_by_the_config():
    from pydantic import ValidationError

    for method in ("rbc", "probfuse", "segfuse", "combgmnz"):
        with pytest.raises(ValidationError, match=f"unknown fusion method '{method}'"):
            FusionSection(method=method)


def test_fusion_weights_of_the_wrong_length_are_a_config_error():
    from ragtune.retrieval.fusion import fuse

    per = random_rankings(random.Random(0), 2, 3)
    for method in ("rrf", "wsum"):
        with pytest.raises(ConfigError, match="fusion.weights has 3 values but 2 retrievers"):
            fuse(per, FusionSection(method=method, weights=[1, 1, 1]), 5)
    with pytest.raises(ConfigError, match="fusion.weights"):
        fuse(per, FusionSection(method="wsum", norm="zmuv", weights=[1]), 5)  # the ranx path checks too


def perfect_and_random_runs(n_queries: int = 20, n_docs: int = 30):
    rng = random.Random(7)
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(n_queries)}
    good = {f"q{i}": {f"d{j}": 1.0 if j == i else rng.random() * 0.5 for j in range(n_docs)} for i in range(n_queries)}
    noise = {f"q{i}": {f"d{j}": rng.random() for j in range(n_docs)} for i in range(n_queries)}
    return qrels, good, noise


def test_tune_fusion_weights_favour_the_perfect_run():
    from ragtune.retrieval.fusion import tune_fusion

    qrels, good, noise = perfect_and_random_runs()
    settings = FusionSection(method="wsum")
    tuned = tune_fusion(qrels, [noise, good], settings)
    assert len(tuned.weights) == 2 and tuned.weights[1] > tuned.weights[0]
    assert settings.weights is None  # the input settings are left alone


def test_tune_fusion_rrf_picks_a_k():
    from ragtune.eval.metrics import ir_metrics
    from ragtune.retrieval.fusion import fuse, tune_fusion

    qrels, good, noise = perfect_and_random_runs()
    tuned = tune_fusion(qrels, [good, noise], FusionSection(method="rrf", rrf_k=60))
    assert isinstance(tuned.rrf_k, int) and tuned.rrf_k > 0 and tuned.method == "rrf"

    def ndcg(settings):
        query_ids = list(qrels)
        per = [[sorted(run[q].items(), key=lambda h: -h[1]) for q in query_ids] for run in (good, noise)]
        run = {q: dict(h) for q, h in zip(query_ids, fuse(per, settings, 10))}
        return ir_metrics(qrels, run, ["ndcg"], [10])["ndcg@10"]

    assert ndcg(tuned) >= ndcg(FusionSection(method="rrf", rrf_k=60))


def test_tune_fusion_leaves_a_method_without_parameters_alone():
    from ragtune.retrieval.fusion import tune_fusion

    qrels, good, noise = perfect_and_random_runs(5, 10)
    settings = FusionSection(method="combmnz")
    assert tune_fusion(qrels, [good, noise], settings) == settings


# ------------------------------------------------------------------------------------------------------ spec parser

def test_spec_parses_every_shape():
    from ragtune.retrieval.spec import Spec, parse_spec

    assert parse_spec("bm25") == Spec("bm25")
    assert parse_spec(" dense:org/model-v2 ") == Spec("dense", model="org/model-v2")
    assert parse_spec("dense:/abs/runs/exp(3)/final").model == "/abs/runs/exp(3)/final"
    hybrid = parse_spec("hybrid(bm25,dense:a/b)")
    assert hybrid == Spec("hybrid", parts=(Spec("bm25"), Spec("dense", model="a/b")))
    assert hybrid.text == "hybrid(bm25,dense:a/b)" and [p.text for p in hybrid.parts] == ["bm25", "dense:a/b"]
    three = parse_spec("hybrid(bm25,dense:a,dense:./local/m)")
    assert [p.model for p in three.parts] == [None, "a", "./local/m"]
    nested = parse_spec("hybrid(hybrid(bm25,dense:a),dense:b)+rerank:org/ce@50")
    assert nested.parts[0] == Spec("hybrid", parts=(Spec("bm25"), Spec("dense", model="a")))
    assert (nested.reranker, nested.rerank_k) == ("org/ce", 50)
    assert nested.models() == [("dense", "a"), ("dense", "b"), ("rerank", "org/ce")]
    plain = parse_spec("bm25+rerank:/models/cross-encoder")
    assert (plain.kind, plain.reranker, plain.rerank_k) == ("bm25", "/models/cross-encoder", None)
    inner = parse_spec("hybrid(bm25+rerank:x@3,dense:y)")
    assert inner.parts[0] == Spec("bm25", reranker="x", rerank_k=3) and inner.reranker is None
    assert parse_spec("dense:model@v2").model == "model@v2"  # '@' not followed by a count is part of the name


BAD_SPECS = {  # spec: the column the error points at
    "": 1, "bm": 1, "sparse": 1, "BM25": 1, "bm25x": 5, "bm25)": 5, "dense:": 7, "dense:m@5": 8,
    "hybrid(bm25)": 1, "hybrid()": 8, "hybrid(bm25,": 13, "hybrid(bm25,dense:m": 20, "hybrid(bm25 dense:m)": 12,
    "bm25+rerank:": 13, "bm25+rerank:m@": 15, "bm25+rerank:m@0": 15, "bm25+rerank:m@-5": 15, "bm25+rerank:m@0.5": 15,
    "bm25+rerank:a+rerank:b": 14,
    "bm25+dense:m": 5,
}


@pytest.mark.parametrize("spec", sorted(BAD_SPECS), ids=lambda s: s or "empty")
def test_bad_spec_names_the_option_the_spec_and_the_column(spec):
    from ragtune.retrieval.spec import parse_spec

    with pytest.raises(ConfigError) as error:
        parse_spec(spec)
    message = str(error.value)
    assert message.startswith(f"--pipeline '{spec}': at column {BAD_SPECS[spec]} ")
    assert "expected" in message and "\n" not in message


def test_spec_error_names_where_the_spec_came_from():
    from ragtune.retrieval.spec import parse_spec

    with pytest.raises(ConfigError, match="^hard_negatives.first_stage 'bm': at column 1"):
        parse_spec("bm", where="hard_negatives.first_stage")


# -------------------------------------------------------------------------------------------------------- reranker

@pytest.fixture
def cross_encoder(tiny_cross_encoder):
    import torch

    from ragtune.models.load import load_cross_encoder

    model = load_cross_encoder(tiny_cross_encoder, CPU)
    with torch.no_grad():  # the fresh head scores everything near 0.5; spread the scores so ordering is tested
        model[0].auto_model.classifier.weight.mul_(300)
    return model


DOCS = ["a study of heart cardiac arrest finds cholesterol levels matters 3", "lung",
        "a much longer document about the brain and memory loss and sleep quality in older adults over years",
        "skin rash", "gut bacteria and food allergy", "bone density and calcium intake in the spine", "asthma attack"]


def test_reranker_scores_equal_cross_encoder_predict(cross_encoder):
    from ragtune.retrieval.rerank import Reranker

    query = "what about cholesterol levels number 3 in heart"
    reranker = Reranker(cross_encoder, CPU, RerankSection(batch_size=2))  # several length-sorted batches
    scores = reranker.score(query, DOCS)
    expected = cross_encoder.predict([(query, d) for d in DOCS], batch_size=16)
    assert scores.shape == (len(DOCS),)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.ptp(scores) > 1e-3  # distinct scores: a wrong order would show


def test_bf16_on_cpu_runs_a_copy_and_agrees_with_fp32(embedder, cross_encoder):
    # The bf16 path (AVX512-BF16/AMX CPUs) on any CPU: a bf16 copy runs, the fp32 model is left as it was, and the
    # embeddings and rerank scores agree with fp32 to bf16's precision.
    import torch

    from ragtune.retrieval.dense import encode, reduced_precision_copy
    from ragtune.retrieval.rerank import Reranker

    bf16 = Placement("cpu", "bf16", "tests: forced bf16")
    texts = DOCS + [r["document"] for r in toy_pairs()[:8]]
    exact, reduced = encode(embedder, texts, CPU), encode(embedder, texts, bf16)
    assert reduced.dtype == np.float32 and reduced.shape == exact.shape
    assert np.min(np.sum(exact * reduced, axis=1)) > 0.99  # cosine per text
    assert next(embedder.parameters()).dtype == torch.float32

    query = "what about cholesterol levels number 3 in heart"
    fp32_scores = Reranker(cross_encoder, CPU).score(query, DOCS)
    reranker = Reranker(cross_encoder, bf16)
    bf16_scores = reranker.score(query, DOCS)
    assert next(reduced_precision_copy(cross_encoder, bf16)[0].parameters()).dtype == torch.bfloat16
    assert next(cross_encoder.parameters()).dtype == torch.float32
    np.testing.assert_allclose(bf16_scores, fp32_scores, atol=0.02)  # bf16 keeps 8 bits of mantissa


def test_the_bf16_copy_is_made_once_and_again_when_the_weights_change(embedder):
    # A copy per call cost 140 ms per served query; a kept copy must still follow training's in-place updates.
    import torch

    from ragtune.retrieval.dense import encode, reduced_precision_copy

    bf16 = Placement("cpu", "bf16", "tests: forced bf16")
    first = reduced_precision_copy(embedder, bf16)[0]
    assert reduced_precision_copy(embedder, bf16)[0] is first
    assert reduced_precision_copy(embedder, CPU)[0] is embedder  # fp32 runs the model itself
    before = encode(embedder, DOCS[:2], bf16)
    weight = next(embedder.parameters())
    with torch.no_grad():
        weight.mul_(-1.0)  # as an optimizer step would: in place
    try:
        again = reduced_precision_copy(embedder, bf16)[0]
        assert again is not first
        assert torch.equal(next(again.parameters()).float(), weight.to(torch.bfloat16).float())
        assert not np.allclose(encode(embedder, DOCS[:2], bf16), before, atol=1e-3)
    finally:
        with torch.no_grad():
            weight.mul_(-1.0)


def test_the_in_training_evaluator_sees_a_fused_optimizer_step(embedder):
    # transformers' default optimizer, adamw_torch_fused, updates weights without bumping their versions: a kept
    # bf16 copy then scored every checkpoint as the base model (quickstart: "NO GAIN ... 0.8385 -> 0.8385").
    import torch

    from ragtune.config.schema import EvalSection
    from ragtune.data.beir import IRData
    from ragtune.eval.retrieval import ir_evaluator
    from ragtune.retrieval.dense import reduced_precision_copy

    bf16 = Placement("cpu", "bf16", "tests: forced bf16")
    ir = IRData({f"d{i}": text for i, text in enumerate(DOCS)}, {"q0": DOCS[0]}, {"q0": {"d1": 1}}, "toy")
    evaluate = ir_evaluator(ir, EvalSection(ks=[1], primary_metric="ndcg@1"), bf16)
    evaluate(embedder)
    first = reduced_precision_copy(embedder, bf16)[0]
    saved = {k: v.clone() for k, v in embedder.state_dict().items()}
    optimizer = torch.optim.AdamW(embedder.parameters(), lr=0.5, fused=True)
    versions = [p._version for p in embedder.parameters()]
    for p in embedder.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    try:
        assert [p._version for p in embedder.parameters()] == versions  # why versions alone cannot tell
        evaluate(embedder)
        again = reduced_precision_copy(embedder, bf16)[0]
        assert again is not first
        weight = next(embedder.parameters())
        assert torch.equal(next(again.parameters()).float(), weight.detach().to(torch.bfloat16).float())
    finally:
        embedder.load_state_dict(saved)


def test_a_tuned_models_evaluation_vectors_are_cached_for_its_saved_folder(embedder, tmp_path):
    # train embed evaluates the tuned model in memory, then saves final/: those corpus vectors go into the cache as
    # final/'s, so the next retriever over final/ (the RAG stack's SFT contexts) does not encode the corpus again.
    import torch

    from ragtune.config.schema import EvalSection
    from ragtune.data.beir import IRData
    from ragtune.eval.retrieval import LastCorpus, evaluate_model
    from ragtune.models.load import load_embedder
    from ragtune.retrieval.cache import EmbeddingCache
    from ragtune.retrieval.dense import DenseRetriever

    ir = IRData({f"d{i}": text for i, text in enumerate(DOCS)}, {"q0": DOCS[0]}, {"q0": {"d1": 1}}, "toy")
    last, final = LastCorpus(), tmp_path / "final"
    evaluate_model(embedder, ir, EvalSection(ks=[1], primary_metric="ndcg@1"), CPU, last=last)
    embedder.save_pretrained(str(final))
    assert last.cache_as(embedder, str(final))
    reloaded = DenseRetriever(load_embedder(str(final), CPU), CPU, DenseSection(), model_path=str(final))
    key = reloaded._cache_key(list(DOCS))
    cached = EmbeddingCache().get(key, len(DOCS))
    fresh = DenseRetriever(reloaded.model, CPU, DenseSection(cache=False)).encode_documents(list(DOCS))
    np.testing.assert_allclose(cached, fresh, atol=1e-5)

    with torch.no_grad():  # weights that changed after the evaluation are not the ones that made its vectors
        next(embedder.parameters()).add_(0.01)
    assert not last.cache_as(embedder, str(tmp_path / "other"))


def test_a_query_longer_than_the_rerank_limit_is_truncated_too(cross_encoder):
    from ragtune.retrieval.rerank import Reranker

    long_query = " ".join(["cholesterol levels in the heart"] * 10)
    scores = Reranker(cross_encoder, CPU, RerankSection(max_length=12)).score(long_query, DOCS)
    assert scores.shape == (len(DOCS),) and np.isfinite(scores).all()


def test_rerank_orders_the_head_and_keeps_the_tail(cross_encoder):
    from ragtune.retrieval.rerank import Reranker

    query = "brain memory"
    corpus = {f"d{i}": text for i, text in enumerate(DOCS)}
    hits = [(f"d{i}", 10.0 - i) for i in range(len(DOCS))]
    reranker = Reranker(cross_encoder, CPU)
    scores = reranker.score(query, DOCS[:4])
    reranked = reranker.rerank(query, hits, corpus, rerank_k=4)
    assert [d for d, _ in reranked[:4]] == [f"d{i}" for i in np.argsort(-scores, kind="stable")]
    np.testing.assert_allclose([s for _, s in reranked[:4]], np.sort(scores)[::-1], atol=1e-6)
    assert [d for d, _ in reranked[4:]] == ["d4", "d5", "d6"]  # first-stage order, below every reranked hit
    all_scores = [s for _, s in reranked]
    assert all(x > y for x, y in itertools.pairwise(all_scores))
    assert sorted(d for d, _ in reranker.rerank(query, hits, corpus, rerank_k=100)) == sorted(corpus)


def test_rerank_of_nothing(cross_encoder):
    from ragtune.retrieval.rerank import Reranker

    reranker = Reranker(cross_encoder, CPU)
    assert reranker.rerank("anything", [], {}, rerank_k=5) == []
    assert reranker.score("anything", []).shape == (0,)


# -------------------------------------------------------------------------------------------------------- pipeline

def test_pipeline_builder_shares_first_stages_and_reranks(tiny_embedder, tiny_cross_encoder):
    from ragtune.config.retrieval import RetrievalConfig
    from ragtune.retrieval.pipeline import HybridRetriever, PipelineBuilder

    queries, corpus = toy_corpus()
    builder = PipelineBuilder(corpus, RetrievalConfig(dense=DenseSection(cache=False)), placement=CPU)
    plain = builder.build(f"hybrid(bm25,dense:{tiny_embedder})")
    reranked = builder.build(f"hybrid(bm25,dense:{tiny_embedder})+rerank:{tiny_cross_encoder}@4")
    assert isinstance(plain.first, HybridRetriever) and plain.first is reranked.first  # built once
    assert builder.build("bm25").first is plain.first.parts[0]
    assert plain.reranker is None and reranked.rerank_k == 4 and plain.name == f"hybrid(bm25,dense:{tiny_embedder})"
    first = plain.search(queries[:3], 10)
    second = reranked.search(queries[:3], 10)
    for a, b in zip(first, second):
        assert sorted(d for d, _ in a[:4]) == sorted(d for d, _ in b[:4])  # the reranker reorders the top 4 only
        assert [d for d, _ in a[4:10]] == [d for d, _ in b[4:10]]
    hits, first_ms, rerank_ms = reranked.search_timed(queries[0], 10)
    assert len(hits) == 10 and first_ms > 0 and rerank_ms > 0
    with pytest.raises(DataError, match="corpus is empty"):
        PipelineBuilder({})


def test_rerank_order_mixes_in_the_first_stage_score():
    import numpy as np

    from ragtune.retrieval.rerank import order

    head = [("a", 10.0), ("b", 9.0), ("c", 1.0)]
    ce = np.array([0.0, 1.0, 0.5])
    assert [d for d, _ in order(head, ce, [("z", 0.5)])] == ["b", "c", "a", "z"]  # the reranker alone
    # weight 0.5: a = 0.5*0 + 0.5*1 = 0.5, b = 0.5*1 + 0.5*(8/9) = 0.944, c = 0.5*0.5 + 0 = 0.25
    assert [d for d, _ in order(head, ce, [("z", 0.5)], 0.5)] == ["b", "a", "c", "z"]
    assert [d for d, _ in order(head, ce, [], 1.0)] == ["a", "b", "c"]  # the first stage alone
