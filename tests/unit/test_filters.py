"""Metadata filters (`ragtune.retrieval.filters`): --where and LangChain dict parsing, the SQL against a
brute-force reference, filtered search on every first stage and FAISS index type against brute force (k results
whenever k pass), and the filter in `query`, the LangChain retriever, `serve` and `eval retrieval`, with bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from ragtune.errors import ConfigError
from ragtune.retrieval.filters import from_dict, from_where, matching_records, parse_filter
from tests.unit.test_bad_input import _write, one_line_error
from tests.unit.test_chunk import prose

TEAMS = ["search", "ranking", "infra"]


def records(n: int = 60, seed: int = 0) -> list[dict]:
    """Corpus records with every kind of metadata a user writes: strings, numbers, numbers as text, booleans,
    lists, nested objects and missing fields."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        meta = {"team": TEAMS[i % 3]}
        if i % 7:
            meta["year"] = 2020 + i % 6 if i % 5 else str(2020 + i % 6)  # every fifth year is text
        if i % 4 == 0:
            meta["tags"] = rng.sample(["faq", "howto", "api", "draft"], 2)
        if i % 6 == 0:
            meta["draft"] = bool(i % 12)
        meta["owner"] = {"level": i % 3}
        out.append({"text": f"{prose(12, seed=i)} record{i}", "doc": f"d{i}", **meta})
    return out


def reference(meta: dict, conditions: list[tuple[str, str, object]]) -> bool:
    """Brute force, written from the module's stated semantics: any element of a list may satisfy a condition,
    a number only compares with numbers, a string only with strings, and != holds where nothing equals."""
    def values(field):
        value = meta
        for part in field.split("."):
            if not isinstance(value, dict) or part not in value:
                return []
            value = value[part]
        return value if isinstance(value, list) else [value]

    def same_kind(a, b):
        if isinstance(a, bool) or isinstance(b, bool):
            return isinstance(a, bool) and isinstance(b, bool)
        return isinstance(a, (int, float)) == isinstance(b, (int, float)) and isinstance(a, str) == isinstance(b, str)

    def holds(field, op, wanted):
        found = values(field)
        if op == "!=":
            return not holds(field, "=", wanted)
        if op == "in":
            return any(holds(field, "=", w) for w in wanted)
        compare = {"=": lambda a, b: a == b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
                   "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}[op]
        return any(same_kind(v, wanted) and compare(v, wanted) for v in found)

    return all(holds(*c) for c in conditions)


CASES = [  # --where strings, and the same conditions for the reference
    (["team=search"], [("team", "=", "search")]),
    (["team!=search"], [("team", "!=", "search")]),
    (["year>=2023"], [("year", ">=", 2023)]),
    (["year<2022", "team=ranking"], [("year", "<", 2022), ("team", "=", "ranking")]),
    (["year='2024'"], [("year", "=", "2024")]),  # the years stored as text
    (["tags=faq"], [("tags", "=", "faq")]),
    (["tags!=draft"], [("tags", "!=", "draft")]),
    (["team=[search, infra]"], [("team", "in", ["search", "infra"])]),
    (["draft=true"], [("draft", "=", True)]),
    (["owner.level>=1"], [("owner.level", ">=", 1)]),
    (["team>=ranking"], [("team", ">=", "ranking")]),  # strings order as text
]


@pytest.mark.parametrize("where,conditions", CASES, ids=[" ".join(w) for w, _ in CASES])
def test_the_sql_agrees_with_a_brute_force_filter(where, conditions):
    rows = records()
    got = matching_records([(r["doc"], "c.jsonl", "", None, {k: v for k, v in r.items() if k not in ("doc", "text")})
                            for r in rows], from_where(where))
    want = {r["doc"] for r in rows if reference(r, conditions)}
    assert got == want and want  # and the case is not vacuous


def test_langchain_dicts_and_where_strings_mean_the_same():
    rows = [(r["doc"], "c.jsonl", "", None, {k: v for k, v in r.items() if k not in ("doc", "text")})
            for r in records()]
    pairs = [({"team": "search", "year": {"$gte": 2023}}, ["team=search", "year>=2023"]),
             ({"team": {"$in": ["search", "infra"]}}, ["team=[search, infra]"]),
             ({"tags": {"$nin": ["faq", "api"]}}, ["tags!=[faq, api]"]),
             ({"team": {"$ne": "search"}}, ["team!=search"])]
    for spec, where in pairs:
        assert matching_records(rows, from_dict(spec)) == matching_records(rows, from_where(where)), spec
    either = matching_records(rows, from_dict({"$or": [{"team": "search"}, {"year": {"$lt": 2021}}]}))
    assert either == matching_records(rows, from_where(["team=search"])) | matching_records(rows, from_where(
        ["year<2021"]))
    missing = matching_records(rows, from_dict({"year": {"$exists": False}}))
    assert missing == {r["doc"] for r in records() if "year" not in r}
    assert matching_records(rows, from_where(["year=null"])) == missing
    assert parse_filter(None) is None and parse_filter([]) is None
    assert parse_filter('{"team": "search"}') == from_dict({"team": "search"})
    assert from_dict(from_where(["team=search", "year>=2023"]).to_dict()) is not None  # to_dict round-trips


@pytest.mark.parametrize("given,needles", [
    (["team"], ["--where 'team'", "KEY=VALUE"]),
    (["=search"], ["not a condition"]),
    (["team="], ["not a condition"]),
    (["year>[1, 2]"], ["a list works with = (any of) and != (none of) only"]),
    ({"team": {"$gtee": 1}}, ["unknown operator '$gtee'", "$gte"]),
    ({"team": {"$in": "search"}}, ["'$in' of field 'team' takes a list"]),
    ({"team": {"$exists": 1}}, ["'$exists'", "true or false"]),
    ({"team": {"$gt": None}}, ["'$gt' of field 'team'"]),
    ({"team": {"$eq": {"a": 1}}}, ["only strings, numbers, booleans and null"]),
    ({"$and": {}}, ["'$and' takes a non-empty list"]),
    ({"$not": [{"a": 1}]}, ["'$not' is not a field"]),
    ({"team": {}}, ["empty condition"]),
    ("{bad json", ["not a JSON filter"]),
    (42, ["a filter is a dict"]),
])
def test_bad_filters_are_config_errors_naming_the_fix(given, needles):
    with pytest.raises(ConfigError) as caught:
        parse_filter(given)
    for needle in needles:
        assert needle in str(caught.value), (needle, str(caught.value))


# ---------------------------------------------------------------------------------------------- filtered search
@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("filtered")
    return _write(folder / "docs" / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records()))


def _build(cli, corpus_file, tmp_path, embedder, *overrides) -> Path:
    config = tmp_path / "retrieval.yaml"
    config.write_text("".join(f"{o}\n" for o in overrides) or "{}\n")
    index = tmp_path / "index"
    code, _, err = cli("index", "build", corpus_file.parent, "--out", index, "--embedder", embedder, "-c", config,
                       "--chunk-size", "64")
    assert code == 0, err
    return index


def _brute_force_dense(index, query: str, allowed: set[str], k: int) -> list[str]:
    rows = index.rows()
    ids = sorted(allowed, key=rows.get)
    vectors = index.vectors([rows[i] for i in ids])
    scores = vectors @ index.dense().encode_queries([query])[0]
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


@pytest.mark.parametrize("faiss_index", ["flat", "hnsw", "ivf"])
def test_filtered_dense_search_is_the_brute_force_top_k(cli, corpus_file, tmp_path, tiny_embedder, faiss_index):
    from ragtune.index import Index

    settings = {"flat": [], "hnsw": ["dense:", "  index: hnsw", "  hnsw_ef_search: 4"],
                "ivf": ["dense:", "  index: ivf", "  ivf_nlist: 8", "  ivf_nprobe: 1"]}[faiss_index]
    index = Index(_build(cli, corpus_file, tmp_path, tiny_embedder, *settings))
    query = prose(8, seed=3)
    for where in (["team=search"], ["team=infra", "year>=2023"], ["tags=api"]):
        allowed = index.matching(where)
        k = 5
        hits = index.search(query, k, "dense", where)
        assert len(hits) == min(k, len(allowed)) and {d for d, _ in hits} <= allowed, where
        assert [d for d, _ in hits] == _brute_force_dense(index, query, set(allowed), k), where
    assert index.search(query, 5, "dense", ["team=nobody"]) == []


def test_filtered_bm25_and_hybrid_search_keep_k_results_that_pass(cli, corpus_file, tmp_path, tiny_embedder):
    from ragtune.index import Index

    index = Index(_build(cli, corpus_file, tmp_path, tiny_embedder))
    query = prose(8, seed=5)
    allowed = index.matching(["team=ranking"])
    bm25 = index.bm25()
    expected = sorted((float(s) for s in bm25.scores_for(query, sorted(allowed)) if s > 0), reverse=True)[:6]
    hits = index.search(query, 6, "bm25", ["team=ranking"])
    assert [round(s, 4) for _, s in hits] == [round(s, 4) for s in expected]  # ties may come in any order
    assert {d for d, _ in hits} <= allowed
    for stage in ("hybrid", "bm25", "dense"):
        unfiltered = index.search(query, 6, stage)
        filtered = index.search(query, 6, stage, {"team": "ranking"})
        assert len(filtered) == 6 and {d for d, _ in filtered} <= allowed, stage
        assert any(d not in allowed for d, _ in unfiltered), stage  # the filter changed what came back


def test_query_langchain_and_eval_take_the_filter(cli, corpus_file, tmp_path, tiny_embedder):
    index = _build(cli, corpus_file, tmp_path, tiny_embedder)
    code, out, err = cli("--json", "query", index, prose(6, seed=1), "--no-generate", "--where", "team=search",
                         "--where", "year>=2022", "-k", "4")
    assert code == 0, err
    sources = json.loads(out)["sources"]
    assert len(sources) == 4
    assert all(s["metadata"]["team"] == "search" and s["metadata"]["year"] >= 2022 for s in sources)

    pytest.importorskip("langchain_core")
    from ragtune.integrations.langchain import RagtuneRetriever

    retriever = RagtuneRetriever.from_index(index, k=3, search_kwargs={"filter": {"team": "infra"}})
    documents = retriever.invoke(prose(6, seed=2))
    assert len(documents) == 3 and all(d.metadata["team"] == "infra" for d in documents)
    documents = retriever.invoke(prose(6, seed=2), filter={"tags": "faq"}, k=2)  # per call, as a vector store's
    assert len(documents) == 2 and all("faq" in d.metadata["tags"] for d in documents)
    with pytest.raises(ConfigError, match="fetch_k not understood"):
        retriever.invoke("q", fetch_k=10)
    with pytest.raises(ConfigError, match="unknown operator"):
        retriever.invoke("q", filter={"team": {"$regex": "s.*"}})


def _beir(folder: Path) -> Path:
    rows = records(30)
    _write(folder / "corpus.jsonl", "".join(json.dumps({"_id": r["doc"], "title": "", "text": r["text"],
                                                        "metadata": {"team": r["team"]},
                                                        **({"year": r["year"]} if "year" in r else {})}) + "\n"
                                            for r in rows))
    _write(folder / "queries.jsonl", "".join(json.dumps({"_id": f"q{i}", "text": rows[i]["text"]}) + "\n"
                                             for i in range(9)))
    _write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(9)))
    return folder


def test_eval_retrieval_with_where_searches_and_judges_the_filtered_corpus(cli, tmp_path, tiny_embedder):
    data = _beir(tmp_path / "beir")
    code, out, err = cli("--json", "eval", "retrieval", "--data", data, "-p", "bm25", "-p", f"dense:{tiny_embedder}",
                         "--where", "team=search")
    assert code == 0, err
    results = json.loads(out)["pipelines"]
    assert all(r["queries"] == 3 and r["documents"] == 10 for r in results)  # q0, q3, q6 judge search documents
    assert results[0]["metrics"]["recall@10"] == 1.0  # each query is its own document's text


@pytest.mark.parametrize("command", ["query", "eval"])
def test_a_bad_where_is_one_line(cli, tmp_path, tiny_embedder, corpus_file, command):
    if command == "query":
        index = _build(cli, corpus_file, tmp_path, tiny_embedder)
        result = cli("query", index, "q", "--no-generate", "--where", "year>>2")
    else:
        result = cli("eval", "retrieval", "--data", _beir(tmp_path / "beir"), "-p", "bm25", "--where", "year>>2")
    one_line_error(result, "--where 'year>>2'")


def test_a_filter_in_the_query_config_is_checked_at_load(cli, tmp_path):
    config = _write(tmp_path / "query.yaml", "filter:\n  team:\n    $gtee: 3\n")
    one_line_error(cli("query", tmp_path / "nowhere", "q", "-c", config), "filter", "unknown operator '$gtee'")


def test_serve_search_and_chat_take_a_filter_and_refuse_a_bad_one(cli, corpus_file, tmp_path, tiny_embedder):
    pytest.importorskip("fastapi")
    from tests.unit.test_serve import post, start

    index = _build(cli, corpus_file, tmp_path, tiny_embedder)
    with start(index) as url:
        reply = post(url, "/v1/search", {"query": prose(6, seed=4), "k": 5,
                                         "filter": {"team": "ranking", "year": {"$gte": 2022}}})
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert len(results) == 5
        assert all(r["metadata"]["team"] == "ranking" and r["metadata"]["year"] >= 2022 for r in results)
        for body in ({"query": "q", "filter": {"team": {"$gtee": 1}}}, {"query": "q", "filter": "team=x"},
                     {"messages": [{"role": "user", "content": "q"}], "filter": {"$or": []}}):
            path = "/v1/chat/completions" if "messages" in body else "/v1/search"
            reply = post(url, path, body)
            assert reply.status_code in (404, 422), reply.text
            if path == "/v1/search":
                assert reply.status_code == 422 and reply.json()["error"]["param"] == "filter", reply.text
