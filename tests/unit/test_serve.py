"""`ragtune serve`: the real server (uvicorn on a free loopback port) over a tiny index, with tiny models, asked by
real clients (httpx, the openai client, LangChain), good requests and bad ones."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.unit.test_index import build, make_docs
from tests.unit.test_rag import chat_server  # noqa: F401 (the fixture: an OpenAI-compatible stub endpoint)

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")


def start(index: Path, api_key: str | None = None, **changes):
    from ragtune.config import load_config
    from ragtune.serve.app import build_app
    from ragtune.serve.runner import Background
    from ragtune.serve.state import ServeState

    models = {k: changes.pop(k) for k in ("reranker", "generator", "generator_model") if k in changes}
    settings = load_config("serve", None, [f"{k}={v}" for k, v in {"index_poll_s": 0.1, **changes}.items()])
    state = ServeState(index, settings, **models)
    return Background(build_app(state, api_key))


@pytest.fixture
def index(cli, tmp_path, tiny_embedder) -> Path:
    built = tmp_path / "index"
    build(cli, make_docs(tmp_path / "docs"), built, tiny_embedder)
    return built


@pytest.fixture
def full(index, tiny_cross_encoder, tiny_llm):
    with start(index, reranker=tiny_cross_encoder, generator=tiny_llm) as url:
        yield url


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url + path, content=data, headers={"content-type": "application/json",
                                                         **kwargs.pop("headers", {})}, timeout=60, **kwargs)


def test_embeddings_match_the_index_embedder_in_float_and_base64(full, index):
    from ragtune.index import Index

    dense = Index(index).dense()
    texts = ["statins lower cholesterol", "asthma attack"]
    reply = post(full, "/v1/embeddings", {"input": texts, "model": "x"}).json()
    assert [d["index"] for d in reply["data"]] == [0, 1] and reply["usage"]["total_tokens"] > 0
    expected = dense.encode_documents(texts)
    np.testing.assert_allclose([d["embedding"] for d in reply["data"]], expected, atol=1e-5)
    packed = post(full, "/v1/embeddings", {"input": texts[0], "encoding_format": "base64"}).json()["data"][0]
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(packed["embedding"]), dtype=np.float32), expected[0],
                               atol=1e-5)
    query = post(full, "/v1/embeddings", {"input": texts[0], "input_type": "query"}).json()["data"][0]["embedding"]
    np.testing.assert_allclose(query, dense.encode_queries(texts[:1])[0], atol=1e-5)


def test_the_openai_client_embeds_and_chats_streaming_and_not(full):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=full + "/v1", api_key="unused")
    vectors = client.embeddings.create(model="any", input=["heart rhythm", "bone density"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0
    reply = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "calcium and bones?"}],
                                           max_tokens=8)
    assert reply.choices[0].message.role == "assistant" and isinstance(reply.choices[0].message.content, str)
    assert reply.model_extra["sources"] and reply.model_extra["sources"][0]["n"] == 1  # ignored by OpenAI clients
    pieces = list(client.chat.completions.create(model="any", stream=True, max_tokens=8,
                                                 messages=[{"role": "user", "content": "calcium and bones?"}]))
    assert pieces[0].choices[0].delta.role == "assistant" and pieces[-1].choices[0].finish_reason == "stop"
    streamed = "".join(p.choices[0].delta.content or "" for p in pieces)
    assert streamed.strip() == reply.choices[0].message.content.strip()  # greedy: the same answer either way


def test_langchain_openai_embeddings_and_chat_in_a_retrieval_chain(full):
    lc = pytest.importorskip("langchain_openai")
    embeddings = lc.OpenAIEmbeddings(base_url=full + "/v1", api_key="unused", model="any",
                                     check_embedding_ctx_length=False)
    assert len(embeddings.embed_query("gut bacteria")) == len(embeddings.embed_documents(["liver"])[0])
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from ragtune.integrations.langchain import RagtuneRetriever

    chat = lc.ChatOpenAI(base_url=full + "/v1", api_key="unused", model="any", max_tokens=8)
    prompt = ChatPromptTemplate.from_template("{context}\n\n{question}")
    chain = prompt | chat | StrOutputParser()
    assert isinstance(chain.invoke({"context": "Gut bacteria protect.", "question": "What protects?"}), str)
    del RagtuneRetriever  # the chain above uses the server's own retrieval; the retriever class is tested elsewhere


def test_rerank_and_search(full, index, tiny_cross_encoder):
    from ragtune.models.device import Placement
    from ragtune.models.load import load_cross_encoder

    documents = ["Bone density depends on calcium intake", "Gut bacteria protect against a stomach ulcer."]
    reply = post(full, "/v1/rerank", {"query": "calcium", "documents": documents, "top_n": 1,
                                      "return_documents": True}).json()
    scores = load_cross_encoder(tiny_cross_encoder, Placement("cpu", "fp32", "tests")).predict([("calcium", d) for d in documents])
    # the server runs the precision it measured fastest here (bf16 on some CPUs, chosen by timing): its scores match
    # fp32's to bf16's precision, and the random tiny model's two scores can be that close
    top = reply["results"][0]["index"]
    assert len(reply["results"]) == 1 and reply["results"][0]["document"]["text"] == documents[top]
    assert float(scores[top]) >= float(np.max(scores)) - 2e-2
    assert abs(reply["results"][0]["relevance_score"] - float(scores[top])) < 2e-2
    found = post(full, "/v1/search", {"query": "calcium intake bone", "k": 2, "first_stage": "bm25",
                                      "rerank": False}).json()
    assert found["index_version"] == "v000001" and 1 <= len(found["results"]) <= 2  # BM25: matching chunks only
    assert found["results"][0]["source"].endswith("bone.pdf") and found["results"][0]["n"] == 1


def test_health_models_and_metrics(full):
    assert httpx.get(full + "/health").json()["status"] == "ok"
    roles = {m["role"] for m in httpx.get(full + "/v1/models").json()["data"]}
    assert roles == {"embedder", "reranker", "generator"}
    post(full, "/v1/embeddings", {"input": ["a", "a"]})
    post(full, "/v1/embeddings", {"input": ["a"]})
    text = httpx.get(full + "/metrics").text
    for name in ("ragtune_request_seconds_bucket", "ragtune_requests_total", "ragtune_batch_size_bucket",
                 "ragtune_embedding_cache_hit_rate", "ragtune_resident_memory_bytes", "ragtune_index_version 1.0"):
        assert name in text, name
    rate = float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("ragtune_embedding_cache_hit_rate ")))
    assert rate > 0  # "a" was embedded once and found in the cache after


def test_concurrent_embedding_requests_share_model_calls(index):
    import concurrent.futures

    with start(index, batch_window_ms=50) as url:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: post(url, "/v1/embeddings", {"input": [f"text {i} {j}" for j in
                                                                                    range(3)]}), range(8)))
        assert all(r.status_code == 200 and len(r.json()["data"]) == 3 for r in replies)
        text = httpx.get(url + "/metrics").text
    calls = float(next(line.split()[1] for line in text.splitlines()
                       if line.startswith('ragtune_batch_size_count{model="embed"}')))
    assert calls < 8  # 8 requests, fewer model calls


BAD = {
    "malformed json": (b'{"input": ', 400, "malformed JSON"),
    "not utf-8": (b'{"input": "caf\xe9"}', 400, "not UTF-8"),
    "not an object": (b'["a"]', 422, "JSON object"),
    "missing field": ({}, 422, "input"),
    "wrong type": ({"input": 42}, 422, "input"),
    "empty list": ({"input": []}, 422, "empty"),
    "empty text": ({"input": ["  "]}, 422, "empty"),
    "unknown field": ({"input": "a", "temperature_x": 1}, 422, "unknown field 'temperature_x'"),
    "too many inputs": ({"input": ["a"] * 5}, 413, "max_inputs"),
    "too long": ({"input": "x" * 101}, 413, "max_input_chars"),
    "bad encoding": ({"input": "a", "encoding_format": "int8"}, 422, "encoding_format"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_bodies_get_a_4xx_json_error(index, case):
    body, status, needle = BAD[case]
    with start(index, max_inputs=4, max_input_chars=100) as url:
        reply = post(url, "/v1/embeddings", body)
        assert reply.status_code == status and needle in reply.json()["error"]["message"], reply.text
        assert post(url, "/v1/embeddings", {"input": "fine"}).status_code == 200  # and the server goes on


def test_limits_auth_and_missing_models(index):
    with start(index, api_key="s3cret", max_body_bytes=200) as url:
        assert httpx.get(url + "/health").status_code == 200  # no key needed
        assert post(url, "/v1/embeddings", {"input": "a"}).status_code == 401
        wrong = post(url, "/v1/embeddings", {"input": "a"}, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        key = {"authorization": "Bearer s3cret"}
        assert post(url, "/v1/embeddings", {"input": "a"}, headers=key).status_code == 200
        big = post(url, "/v1/embeddings", {"input": "a" * 500}, headers=key)
        assert big.status_code == 413 and "max_body_bytes" in big.json()["error"]["message"]
        assert httpx.get(url + "/metrics").status_code == 401
        none = post(url, "/v1/rerank", {"query": "a", "documents": ["b"]}, headers=key)
        assert none.status_code == 404 and "--reranker" in none.json()["error"]["message"]
        chat = post(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}]}, headers=key)
        assert chat.status_code == 404 and "--generator" in chat.json()["error"]["message"]
        path = post(url, "/v1/search", {"query": "a", "index": "/etc"}, headers=key)
        assert path.status_code == 422 and "unknown field 'index'" in path.json()["error"]["message"]


def test_index_changes_are_served_without_a_restart(cli, index, tmp_path, tiny_embedder):
    with start(index) as url:
        ask = {"query": "zebra migration savanna", "k": 1, "first_stage": "bm25"}
        assert post(url, "/v1/search", ask).json()["results"] == []  # BM25 knows no zebra yet
        new = tmp_path / "more" / "zebra.txt"
        new.parent.mkdir()
        new.write_text("Zebra migration crosses the savanna every year.", encoding="utf-8")
        code, _, err = cli("index", "add", index, new)
        assert code == 0, err
        time.sleep(0.3)
        found = post(url, "/v1/search", ask).json()
        assert found["index_version"] == "v000002" and "Zebra" in found["results"][0]["text"]


def test_the_serve_command_starts_answers_and_stops(index, tmp_path):
    env = {**os.environ, "RAGTUNE_API_KEY": "k"}
    proc = subprocess.Popen([sys.executable, "-m", "ragtune", "--json", "serve", str(index), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        printed = ""
        while not printed.rstrip().endswith("}"):  # --json prints one (indented) object once the port is bound
            printed += proc.stdout.readline() or (_ for _ in ()).throw(AssertionError(proc.stderr.read()))
        url = json.loads(printed)["url"]
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert url.startswith("http://127.0.0.1:")
        assert post(url, "/v1/embeddings", {"input": "a"}, headers={"authorization": "Bearer k"}).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_serve_bad_arguments_are_one_line(cli, index, tmp_path):
    from tests.unit.test_chunk import error_line

    error_line(cli("serve", tmp_path / "nothing", "--port", "0"), "not a ragtune index")
    error_line(cli("serve", index, "max_batch=0"), "max_batch")
    error_line(cli("serve", index, "no_such=1"), "unknown key 'no_such'")


def test_query_asks_a_running_server(cli, full, index):
    from tests.unit.test_chunk import error_line

    code, out, err = cli("--json", "query", index, "calcium intake bone", "--server", full, "--no-generate", "-k", "2",
                         "first_stage=bm25")
    assert code == 0, err
    assert json.loads(out)["sources"][0]["source"].endswith("bone.pdf")
    code, out, err = cli("--json", "query", index, "calcium intake bone", "--server", full + "/v1")
    assert code == 0 and isinstance(json.loads(out)["answer"], str) and json.loads(out)["sources"], err
    error_line(cli("query", index, "q", "--server", "http://127.0.0.1:9"), "--server", "ragtune serve")


def test_a_client_leaving_mid_stream_fails_no_other_request(full):
    body = {"messages": [{"role": "user", "content": "calcium and bones?"}], "stream": True, "max_tokens": 16}
    with httpx.stream("POST", full + "/v1/chat/completions", json=body, timeout=60) as reply:
        first = next(reply.iter_lines())
        assert first.startswith("data: ")
    # the client has gone; the server goes on answering
    assert post(full, "/v1/embeddings", {"input": "still here"}).status_code == 200
    again = post(full, "/v1/chat/completions", {**body, "stream": False, "max_tokens": 4})
    assert again.status_code == 200 and again.json()["choices"][0]["finish_reason"] == "stop"


def test_a_remote_generator_stream_is_relayed_piece_by_piece(index, chat_server):  # noqa: F811 (the fixture)
    openai = pytest.importorskip("openai")
    chat_server.reply = lambda body: "Yes, calcium keeps bone density up [1]."
    with start(index, generator=chat_server.url, generator_model="stub") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        arrivals, pieces = [], []
        for chunk in client.chat.completions.create(model="any", stream=True, max_tokens=16,
                                                    messages=[{"role": "user", "content": "calcium and bones?"}]):
            arrivals.append(time.monotonic())
            pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(pieces) == "Yes, calcium keeps bone density up [1]."
    assert sum(1 for p in pieces if p) == 7 and arrivals[-1] - arrivals[1] > 0.2  # as the endpoint sent them
    assert chat_server.requests[-1]["body"]["stream"] is True


def test_search_with_batched_query_vectors_ranks_as_the_local_pipeline(full, index):
    from ragtune.config.rag import RAGSection
    from ragtune.index import Index
    from ragtune.rag.pipeline import RAGPipeline

    for first_stage in ("hybrid", "dense"):
        question = "calcium intake and bone density"
        local = RAGPipeline(Index(index), settings=RAGSection(k=3, first_stage=first_stage)).retrieve(question)
        served = post(full, "/v1/search", {"query": question, "k": 3, "first_stage": first_stage,
                                           "rerank": False}).json()
        assert [s["id"] for s in served["results"]] == [s.id for s in local]
        assert "encode_ms" in served["timings_ms"]


def test_serve_refuses_an_embedder_that_is_not_the_index_one(cli, index, tiny_embedder, tmp_path):
    from tests.unit.test_chunk import error_line
    from tests.unit.test_index import perturbed_copy

    other = perturbed_copy(tiny_embedder, tmp_path / "other-embedder")
    error_line(cli("serve", index, "--port", "0", "--embedder", other), "different model")
