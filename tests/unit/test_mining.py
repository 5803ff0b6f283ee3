"""Hard-negative mining: the filters' arithmetic, sampling, output formats, `ragtune data mine`, memory, training."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ragtune.config.retrieval import HardNegativesSection
from ragtune.errors import DataError
from tests.conftest import tiny_train_overrides, toy_pairs, write_jsonl
from tests.unit.test_bad_input import one_line_error


class FixedRetriever:
    """A first stage that returns fixed hits per query, best first, and records every call."""

    name = "fixed"

    def __init__(self, hits: dict[str, list[tuple[str, float]]]):
        self.hits, self.calls = hits, []

    def search(self, queries: list[str], k: int):
        self.calls.append((len(queries), k))
        return [self.hits[q][:k] for q in queries]


class FixedScorer:
    """A cross-encoder stand-in: a fixed score per document text; records what it was asked to score."""

    def __init__(self, scores: dict[str, float]):
        self.scores, self.seen = scores, []

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        self.seen += documents
        return np.array([self.scores[d] for d in documents], dtype=np.float32)


# One query whose positive P scores 10; candidates a..f below it.
CORPUS = {"P": "the positive", "a": "doc a", "b": "doc b", "c": "doc c", "d": "doc d", "e": "doc e", "f": "doc f"}
HITS = [("a", 9.5), ("P", 10.0), ("b", 9.0), ("c", 8.0), ("d", 5.0), ("e", 2.0), ("f", 1.0)]
PAIRS = [("the query", "the positive")]


def mine_fixed(hits=HITS, pairs=PAIRS, corpus=CORPUS, reranker=None, **settings):
    from ragtune.retrieval.mine import mine

    settings = HardNegativesSection(**{"output": "triplets", **settings})
    return mine(pairs, corpus, FixedRetriever({q: hits for q, _ in pairs}), settings, reranker)


def negatives(rows) -> list[str]:
    """The negative texts of triplet rows, mapped back to their corpus ids."""
    text_to_id = {t: d for d, t in CORPUS.items()}
    return [text_to_id[r["negative"]] for r in rows]


# ----------------------------------------------------------------------------------------------- filter arithmetic

def test_the_positive_is_never_a_negative_and_the_report_counts():
    rows, report = mine_fixed(num_negatives=3)
    assert negatives(rows) == ["a", "b", "c"]  # top: best-ranked survivors, P skipped
    assert report.pairs == 1 and report.candidates == 7 and report.removed["positives"] == 1
    assert report.negatives == 3 and report.short_pairs == 0


def test_rank_range_is_counted_after_removing_positives():
    rows, report = mine_fixed(num_negatives=5, range_min=2, range_max=4)
    # It asks for range_max + 1 known positive = 5 hits: a P b c d. Without P: a b c d; ranks [2, 4) are c and d.
    assert negatives(rows) == ["c", "d"] and report.candidates == 5
    assert report.removed["rank range"] == 2 and report.short_pairs == 1
    with pytest.raises(ValueError, match="range_max"):
        HardNegativesSection(range_min=5, range_max=5)


def test_absolute_margin():
    # Keep a candidate only if score <= 10 - 1.5 = 8.5: a (9.5) and b (9.0) go.
    rows, report = mine_fixed(num_negatives=10, absolute_margin=1.5)
    assert negatives(rows) == ["c", "d", "e", "f"] and report.removed["absolute margin"] == 2
    rows, report = mine_fixed(num_negatives=10, absolute_margin=0.5)  # 9.5 is exactly at the bar: kept
    assert negatives(rows) == ["a", "b", "c", "d", "e", "f"] and report.removed["absolute margin"] == 0


def test_relative_margin():
    # Keep only if score <= 10 * (1 - 0.25) = 7.5: a, b and c go.
    rows, report = mine_fixed(num_negatives=10, relative_margin=0.25)
    assert negatives(rows) == ["d", "e", "f"] and report.removed["relative margin"] == 3


def test_max_score():
    rows, report = mine_fixed(num_negatives=10, max_score=4.0)
    assert negatives(rows) == ["e", "f"] and report.removed["max score"] == 4


def test_filters_combined_count_each_candidate_once():
    # absolute: > 9.25 -> a; relative: > 8.5 -> b; max_score: > 6 -> c; d e f survive.
    rows, report = mine_fixed(num_negatives=10, absolute_margin=0.75, relative_margin=0.15, max_score=6.0)
    assert negatives(rows) == ["d", "e", "f"]
    assert {k: report.removed[k] for k in ("absolute margin", "relative margin", "max score")} == {
        "absolute margin": 1, "relative margin": 1, "max score": 1}
    assert any("removed by max score: 1" == line for line in report.lines())


def test_filters_over_several_queries_add_up():
    pairs = [(f"q{i}", "the positive") for i in range(4)]
    rows, report = mine_fixed(pairs=pairs, num_negatives=2, max_score=4.0)
    assert report.pairs == 4 and report.removed["max score"] == 16 and report.negatives == 8 and len(rows) == 8


def test_a_filter_that_removes_everything_is_a_data_error():
    with pytest.raises(DataError, match="mining kept no negatives for any of 1 pairs.*max score: 6"):
        mine_fixed(max_score=0.5)


def test_queries_with_several_positives_never_get_any_of_them():
    from ragtune.retrieval.mine import mine

    # "the query" has two positives, P and a; known_positives adds c (judged relevant elsewhere).
    pairs = [("the query", "the positive"), ("the query", "doc a")]
    retriever = FixedRetriever({"the query": HITS})
    rows, report = mine(pairs, CORPUS, retriever, HardNegativesSection(num_negatives=2, output="triplets"),
                        known_positives={"the query": {"c"}})
    assert set(negatives(rows)) == {"b", "d"} and len(rows) == 4  # two pairs x two negatives
    assert report.removed["positives"] == 6  # P, a and c from each pair's hits
    assert retriever.calls == [(2, 50 + 3)]  # asked deep enough to still have range_max after the positives


def test_duplicate_copies_of_the_positive_are_not_negatives():
    from ragtune.retrieval.bm25 import BM25Retriever
    from ragtune.retrieval.mine import mine

    corpus = {"a": "asthma is a lung disease", "a-copy": "asthma is a lung disease",
              "b": "lung capacity and asthma in runners", "c": "heart disease and cholesterol",
              "d": "a lung cancer study"}
    pairs = [("what is asthma lung disease", "asthma is a lung disease")]
    rows, _ = mine(pairs, corpus, BM25Retriever.build(corpus), HardNegativesSection(num_negatives=3))
    assert "asthma is a lung disease" not in rows[0]["negatives"] and len(rows[0]["negatives"]) == 3


# ------------------------------------------------------------------------------------------------------- sampling

def test_sampling_top_and_random():
    many = [(f"n{i}", 9.0 - i * 0.1) for i in range(20)]
    corpus = {"P": "the positive", **{d: f"text {d}" for d, _ in many}}
    pairs = [(f"q{i}", "the positive") for i in range(10)]
    hits = [("P", 10.0), *many]

    def chosen(**settings):
        rows, _ = mine_fixed(hits=hits, pairs=pairs, corpus=corpus, output="ntuples", num_negatives=3,
                             range_max=10, **settings)
        return [tuple(r["negatives"]) for r in rows]

    top = chosen()
    assert top == [("text n0", "text n1", "text n2")] * 10
    first, again, other = chosen(sampling="random", seed=1), chosen(sampling="random", seed=1), \
        chosen(sampling="random", seed=2)
    assert first == again  # seeded: reproducible
    assert first != other and first != top
    in_range = {f"text n{i}" for i in range(10)}  # the sample comes from ranks [0, 10) only
    assert all(set(row) <= in_range and len(set(row)) == 3 for row in first + other)


# ----------------------------------------------------------------------------------------- cross-encoder filter

def test_cross_encoder_drops_candidates_near_or_above_the_positive():
    # The positive scores 0.9; margin 0.1 puts the bar at 0.8: a (0.95), b (0.9) and c (0.85) are false negatives.
    scorer = FixedScorer({"the positive": 0.9, "doc a": 0.95, "doc b": 0.9, "doc c": 0.85, "doc d": 0.5,
                          "doc e": 0.1, "doc f": 0.0})
    rows, report = mine_fixed(num_negatives=2, reranker=scorer, cross_encoder_margin=0.1)
    assert negatives(rows) == ["d", "e"] and report.removed["cross-encoder"] == 3
    assert "doc f" not in scorer.seen  # rescored only as many candidates as needed
    # Without a margin only scores at or above the positive's go: a and b.
    rows, report = mine_fixed(num_negatives=2, reranker=FixedScorer(scorer.scores))
    assert negatives(rows) == ["c", "d"] and report.removed["cross-encoder"] == 2


def test_cross_encoder_filter_with_the_tiny_cross_encoder(tiny_cross_encoder):
    from ragtune.models.device import Placement
    from ragtune.models.load import load_cross_encoder
    from ragtune.retrieval.bm25 import BM25Retriever
    from ragtune.retrieval.mine import mine
    from ragtune.retrieval.rerank import Reranker

    placement = Placement("cpu", "fp32", "tests")
    pairs = [(r["query"], r["document"]) for r in toy_pairs()]
    corpus = {f"d{i}": p for i, (_, p) in enumerate(pairs)}
    reranker = Reranker(load_cross_encoder(tiny_cross_encoder, placement), placement)
    settings = HardNegativesSection(num_negatives=2, output="triplets")
    rows, report = mine(pairs[:12], corpus, BM25Retriever.build(corpus), settings, reranker)
    assert report.removed["cross-encoder"] > 0 and rows
    for row in rows:  # every kept negative scores below its positive
        positive, negative = reranker.score(row["query"], [row["positive"], row["negative"]])
        assert negative < positive + 1e-6


# ------------------------------------------------------------------------------------------------ output formats

def test_output_formats():
    triplets, _ = mine_fixed(num_negatives=2, output="triplets")
    assert triplets == [{"query": "the query", "positive": "the positive", "negative": "doc a"},
                        {"query": "the query", "positive": "the positive", "negative": "doc b"}]
    (ntuple,), _ = mine_fixed(num_negatives=2, output="ntuples")
    assert ntuple == {"query": "the query", "positive": "the positive", "negatives": ["doc a", "doc b"]}
    labeled, _ = mine_fixed(num_negatives=2, output="labeled_pairs")
    assert labeled == [{"query": "the query", "document": "the positive", "label": 1},
                       {"query": "the query", "document": "doc a", "label": 0},
                       {"query": "the query", "document": "doc b", "label": 0}]


def test_ntuples_skip_pairs_short_of_negatives_but_triplets_keep_them():
    from ragtune.retrieval.mine import mine

    pairs = [("q-full", "the positive"), ("q-short", "the positive")]
    hits = {"q-full": HITS, "q-short": [("P", 10.0), ("a", 1.0)]}
    for output, expected_rows in (("ntuples", 1), ("triplets", 3 + 1)):
        rows, report = mine(pairs, CORPUS, FixedRetriever(hits), HardNegativesSection(num_negatives=3, output=output))
        assert len(rows) == expected_rows and report.short_pairs == 1
    assert {r["query"] for r in rows} == {"q-full", "q-short"}


def test_bm25_mining_over_the_toy_pairs():
    from ragtune.retrieval.bm25 import BM25Retriever
    from ragtune.retrieval.mine import mine

    pairs = [(r["query"], r["document"]) for r in toy_pairs()]
    corpus = {f"d{i}": p for i, (_, p) in enumerate(pairs)}
    retriever = BM25Retriever.build(corpus)
    rows, report = mine(pairs, corpus, retriever, HardNegativesSection(num_negatives=3, range_min=1, range_max=8))
    assert len(rows) == report.pairs - report.short_pairs > 0 and report.negatives == 3 * len(rows)
    text_to_id = {t: d for d, t in corpus.items()}
    for row in rows:
        assert len(row["negatives"]) == 3 and row["positive"] not in row["negatives"]
        # Top sampling with range_min=1: the candidates ranked 1, 2 and 3 once the positive is left out.
        ranked = [s for d, s in retriever.search([row["query"]], 100)[0] if corpus[d] != row["positive"]]
        scores = retriever.scores_for(row["query"], [text_to_id[n] for n in row["negatives"]])
        np.testing.assert_allclose(scores, ranked[1:4], rtol=1e-5)  # equal scores: ties may swap places


def test_a_positive_missing_from_the_corpus_is_a_data_error():
    with pytest.raises(DataError, match="1 positives are not in the mining corpus"):
        mine_fixed(pairs=[("the query", "not a document")])


# -------------------------------------------------------------------------------------------------- the CLI command

def test_data_mine_writes_triplets_that_validate_and_train(cli, pairs_file, tiny_embedder, tmp_path):
    out = tmp_path / "mined.jsonl"
    code, stdout, err = cli("--json", "data", "mine", pairs_file, "--out", out, "output=triplets", "num_negatives=2",
                            "range_max=10")
    assert code == 0, err
    report = json.loads(stdout)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report["pairs"] == len(toy_pairs()) and report["negatives"] == len(rows) == 2 * report["pairs"]
    assert report["removed"]["positives"] == report["pairs"]
    assert all(set(r) == {"query", "positive", "negative"} and r["negative"] != r["positive"] for r in rows)
    assert Counter(r["query"] for r in rows) == Counter({r["query"]: 2 for r in toy_pairs()})

    code, stdout, _ = cli("--json", "data", "validate", out)
    assert code == 0 and json.loads(stdout)["format"] == "triplets"
    assert json.loads(stdout)["counts"]["records"] == len(rows)

    code, _, err = cli("train", "embed", f"data.train={out}", *tiny_train_overrides(tiny_embedder, tmp_path / "run"),
                       "--allow-regression")
    assert code == 0, err
    assert (tmp_path / "run" / "final").is_dir() and "triplets" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize("output", ["triplets", "ntuples", "labeled_pairs"])
def test_every_mining_output_trains_a_reranker(cli, pairs_file, tiny_cross_encoder, tmp_path, output):
    from tests.unit.test_train_rerank import tiny_rerank_overrides

    out = tmp_path / "mined.jsonl"
    code, _, err = cli("data", "mine", pairs_file, "--out", out, f"output={output}", "num_negatives=2", "range_max=10")
    assert code == 0, err
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={out}", *tiny_rerank_overrides(tiny_cross_encoder, run_dir),
                       "--allow-regression")
    assert code == 0, err
    log = (run_dir / "train.log").read_text()
    assert "hard negatives: kept" not in log  # the mined negatives are used as they are, not mined again
    assert json.loads((run_dir / "eval_after.json").read_text())["metrics"]["ndcg@10"] > 0


@pytest.mark.parametrize("kind", ["dense", "hybrid"])
def test_data_mine_with_a_dense_or_hybrid_retriever(cli, pairs_file, tiny_embedder, tmp_path, kind):
    dense = f"dense:{tiny_embedder}"
    spec = dense if kind == "dense" else f"hybrid(bm25,{dense})"
    out = tmp_path / "mined.jsonl"
    code, stdout, err = cli("--json", "data", "mine", pairs_file, "--out", out, f"first_stage={spec}",
                            "output=triplets", "num_negatives=2", "range_max=10", "--device", "cpu")
    assert code == 0, err
    report = json.loads(stdout)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # (a tiny random embedder may rank a positive below the top 10, so not every positive is met and removed)
    assert report["pairs"] == len(toy_pairs()) and 0 < report["removed"]["positives"] <= report["pairs"]
    assert report["negatives"] == len(rows) == 2 * report["pairs"]
    assert all(r["negative"] != r["positive"] for r in rows)
    assert len({(r["query"], r["negative"]) for r in rows}) == len(rows)  # two different negatives per pair
    assert Counter(r["query"] for r in rows) == Counter({r["query"]: 2 for r in toy_pairs()})


def test_the_mining_retriever_takes_its_retrieval_settings(cli, pairs_file, tiny_embedder, tmp_path):
    from ragtune.models.device import Placement
    from ragtune.retrieval.mine import mining_tools

    corpus = {f"d{i}": r["document"] for i, r in enumerate(toy_pairs())}
    settings = HardNegativesSection(first_stage=f"hybrid(bm25,dense:{tiny_embedder})",
                                    bm25={"k1": 0.9, "b": 0.4, "stemming": False},
                                    dense={"index": "hnsw", "cache": False}, fusion={"method": "wsum"})
    retriever, _ = mining_tools(settings, corpus, None, Placement("cpu", "fp32", "tests"))
    bm25, dense = retriever.parts
    assert (bm25.settings.k1, bm25.settings.b, bm25.settings.stemming) == (0.9, 0.4, False)
    assert dense.settings.index == "hnsw" and retriever.settings.method == "wsum"

    out = tmp_path / "mined.jsonl"
    code, _, err = cli("data", "mine", pairs_file, "--out", out, "bm25.k1=0.9", "bm25.language=english")
    assert code == 0, err
    error_line = one_line_error(cli("data", "mine", pairs_file, "--out", out, "bm25.k2=0.9"))
    assert "bm25.k2" in error_line


def test_data_mine_human_output_and_ntuples(cli, pairs_file, tmp_path):
    out = tmp_path / "mined.jsonl"
    code, stdout, err = cli("data", "mine", pairs_file, "-o", out, "num_negatives=3", "max_score=100")
    assert code == 0, err
    assert "hard-negative mining" in stdout and "negatives kept" in stdout and "(ntuples)" in stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(len(r["negatives"]) == 3 for r in rows)


def test_data_mine_with_a_cross_encoder(cli, tiny_cross_encoder, tmp_path):
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs()[:16])
    out = tmp_path / "mined.jsonl"
    code, stdout, err = cli("--json", "data", "mine", pairs_file, "--out", out, f"cross_encoder={tiny_cross_encoder}",
                            "num_negatives=2", "output=labeled_pairs", "--device", "cpu")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["removed"]["cross-encoder"] > 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["label"] for r in rows} == {0, 1} and all(set(r) == {"query", "document", "label"} for r in rows)


def test_data_mine_from_a_config_file_and_a_beir_dir(cli, tmp_path):
    from tests.unit.test_cli import make_beir

    beir = make_beir(tmp_path / "beir")
    config = tmp_path / "mine.yaml"
    config.write_text("first_stage: bm25\nnum_negatives: 2\noutput: triplets\n")
    out = tmp_path / "mined.jsonl"
    code, stdout, err = cli("--json", "data", "mine", beir, "-c", config, "--out", out)
    assert code == 0, err
    assert json.loads(stdout)["pairs"] == len(toy_pairs()) - 12  # the train split of make_beir


def test_data_mine_positive_missing_from_the_given_corpus(cli, pairs_file, tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "x", "text": "an unrelated document"}])
    one_line_error(cli("data", "mine", pairs_file, "--corpus", corpus, "--out", tmp_path / "o.jsonl"),
                   corpus, f"{len(toy_pairs())} of {len(toy_pairs())} positives", "not documents of this corpus")
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("overrides,needles", [
    (["num_negatives=0"], ["num_negatives", "greater than 0"]),
    (["range_min=5", "range_max=5"], ["range_max (5) must be greater than range_min (5)"]),
    (["range_max=0"], ["range_max"]),
    (["num_negativs=3"], ["unknown key 'num_negativs'", "did you mean 'num_negatives'"]),
    (["sampling=best"], ["sampling"]),
    (["output=pairs"], ["output"]),
    (["first_stage=hybrid(bm25"], ["hard_negatives.first_stage 'hybrid(bm25'", "column 12"]),
    (["first_stage=bm25+rerank:x"], ["a mining retriever has no reranker", "cross_encoder"]),
])
def test_data_mine_bad_overrides(cli, pairs_file, tmp_path, overrides, needles):
    one_line_error(cli("data", "mine", pairs_file, "--out", tmp_path / "o.jsonl", *overrides), *needles)
    assert not (tmp_path / "o.jsonl").exists()


def test_data_mine_bad_data_file(cli, tmp_path):
    scored = write_jsonl(tmp_path / "s.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 0.5}])
    one_line_error(cli("data", "mine", scored, "--out", tmp_path / "o.jsonl"), scored, "needs (query, positive) pairs")
    one_line_error(cli("data", "mine", tmp_path / "missing.jsonl", "--out", tmp_path / "o.jsonl"), "missing.jsonl")


# ------------------------------------------------------------------------------------------------- bounded memory

@pytest.mark.parametrize("kind", ["dense", "bm25", "hybrid"])
def test_mining_memory_stays_bounded_over_a_large_corpus(tiny_embedder, kind):
    """100,000 documents x 2,000 queries: batches of 256 queries, never a query-by-corpus score matrix."""
    import tracemalloc

    from ragtune.config.retrieval import DenseSection, FusionSection
    from ragtune.models.device import Placement
    from ragtune.models.load import load_embedder
    from ragtune.retrieval.bm25 import BM25Retriever
    from ragtune.retrieval.dense import DenseRetriever, build_faiss_index
    from ragtune.retrieval.mine import mine
    from ragtune.retrieval.pipeline import HybridRetriever

    n_docs, n_queries = 100_000, 2_000
    corpus = {f"d{i}": f"doc {i} about topic{i % 100}" for i in range(n_docs)}  # each topic: 1,000 documents
    pairs = [(f"query {i} about topic{i * 50 % 100}", corpus[f"d{i * 50}"]) for i in range(n_queries)]
    placement = Placement("cpu", "fp32", "tests")
    model = load_embedder(tiny_embedder, placement)
    vectors = np.random.default_rng(0).standard_normal((n_docs, model.get_sentence_embedding_dimension()),
                                                       dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dense = DenseRetriever(model, placement, DenseSection(cache=False))
    dense.index = build_faiss_index(vectors, dense.settings)
    dense.doc_ids = list(corpus)
    del vectors
    retriever = {"dense": lambda: dense, "bm25": lambda: BM25Retriever.build(corpus),
                 "hybrid": lambda: HybridRetriever([BM25Retriever.build(corpus), dense], FusionSection())}[kind]()

    largest = [0]
    search = retriever.search

    def recording_search(queries, k):
        largest[0] = max(largest[0], len(queries))
        return search(queries, k)

    retriever.search = recording_search
    settings = HardNegativesSection(num_negatives=2, range_max=20, batch_size=256, output="triplets")
    # Python allocations by tracemalloc; native ones (FAISS, torch, numpy buffers) by sampling the resident size.
    rss = Path("/proc/self/statm")
    if not rss.exists():
        pytest.skip("no /proc/self/statm to read the resident size from")
    page = os.sysconf("SC_PAGE_SIZE")

    def resident() -> int:
        return int(rss.read_text().split()[1]) * page

    baseline, native_peak, done = resident(), [0], threading.Event()

    def sample():
        while not done.is_set():
            native_peak[0] = max(native_peak[0], resident())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    try:
        rows, report = mine(pairs, corpus, retriever, settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        done.set()
        sampler.join()
    assert largest[0] == 256, largest
    assert report.pairs == n_queries and len(rows) == 2 * n_queries
    full_matrix = n_queries * n_docs * 4  # float32 scores of every query against every document: 800 MB
    assert peak < 150 * 2**20 < full_matrix / 5, f"peak {peak / 2**20:.0f} MiB"
    growth = native_peak[0] - baseline
    assert native_peak[0] >= baseline > 0  # the sampler ran
    assert growth < full_matrix / 2, f"resident size grew {growth / 2**20:.0f} MiB"


# --------------------------------------------------------------------------------------- hard negatives in training

def test_train_embed_mines_hard_negatives(cli, pairs_file, tiny_embedder, tmp_path):
    run = tmp_path / "run"
    code, stdout, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run),
                            "data.hard_negatives.first_stage=bm25", "data.hard_negatives.num_negatives=2",
                            "loss=mnrl", "--allow-regression")
    assert code == 0, err
    output = stdout + err
    assert "hard negatives:" in output and "kept" in output
    log = (run / "train.log").read_text()
    assert "triplets training examples" in log
    assert "hard_negatives:" in (run / "config.yaml").read_text()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses and all(np.isfinite(losses))


def test_train_embed_hard_negatives_need_pairs(cli, tiny_embedder, tmp_path):
    scored = write_jsonl(tmp_path / "scored.jsonl", [{"sentence1": r["query"], "sentence2": r["document"],
                                                      "score": 0.5} for r in toy_pairs()])
    run = tmp_path / "run"
    one_line_error(cli("train", "embed", f"data.train={scored}", "loss=cosent",
                       *tiny_train_overrides(tiny_embedder, run), "data.hard_negatives.first_stage=bm25"),
                   "data.hard_negatives", "scored_pairs")
    assert not run.exists()


def test_a_pair_with_nothing_left_gets_random_non_positive_documents():
    # Every candidate scores above 95% of the positive's score, so the relative margin leaves nothing to choose.
    close = [("a", 9.9), ("P", 10.0), ("b", 9.8)]
    corpus = {**CORPUS, "P2": "another positive"}
    pairs = [("the query", "the positive"), ("the query", "another positive")]
    rows, report = mine_fixed(hits=close, pairs=pairs, corpus=corpus, relative_margin=0.05, num_negatives=2,
                              range_max=3, short="random", output="ntuples")
    assert len(rows) == 2 and report.short_pairs == 2 and report.random_fills == 4
    for row in rows:
        assert len(row["negatives"]) == 2 and len(set(row["negatives"])) == 2
        assert not {"the positive", "another positive", "doc a", "doc b"} & set(row["negatives"])
    assert "4 random documents filled up the short pairs" in report.lines()
    dropped, report = mine_fixed(hits=close, pairs=pairs[:1], relative_margin=0.05, range_max=3, output="ntuples",
                                 num_negatives=1, short="random")
    assert len(dropped) == 1
    with pytest.raises(DataError, match="kept no negatives"):  # the default for `data mine` still drops them
        mine_fixed(hits=close, pairs=pairs[:1], relative_margin=0.05, range_max=3, output="ntuples")


def test_train_embed_mines_pairs_by_default_and_keeps_given_negatives(cli, tiny_embedder, pairs_file, tmp_path):
    code, out, err = cli("train", "embed", f"data.train={pairs_file}",
                         *tiny_train_overrides(tiny_embedder, tmp_path / "run"), "--allow-regression")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "hard negatives:" in flat and "removed by relative margin" in flat
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "first_stage: dense:base" in config and "loss: gist" in config
    rows = [{"query": f"q {i}", "positive": f"doc {i}", "negative": f"neg {i}"} for i in range(24)]
    triplets = write_jsonl(tmp_path / "triplets.jsonl", rows)
    code, out, err = cli("train", "embed", f"data.train={triplets}",
                         *tiny_train_overrides(tiny_embedder, tmp_path / "run2"), "--allow-regression")
    assert code == 0, err
    assert "hard negatives:" not in out


def test_a_corpus_too_small_to_leave_anything_unretrieved_still_fills_every_pair():
    close = [("a", 9.9), ("P", 10.0), ("b", 9.8)]
    corpus = {"P": "the positive", "a": "doc a", "b": "doc b"}
    rows, report = mine_fixed(hits=close, corpus=corpus, relative_margin=0.05, num_negatives=1, range_max=3,
                              short="random", output="ntuples")
    assert len(rows) == 1 and rows[0]["negatives"][0] in ("doc a", "doc b") and report.random_fills == 1
