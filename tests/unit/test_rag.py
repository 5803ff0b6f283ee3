"""The RAG side: `ragtune query` and RAGPipeline (rerank, threshold, per-document limit, token budget, prompt,
citations), the local and OpenAI-compatible generators against a real HTTP server, `data synth` and its
filters (with the files it writes trained on), and `eval rag` against hand-computed metrics."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ragtune.config.rag import DEFAULT_PROMPT, RAGSection
from ragtune.rag.pipeline import RAGPipeline, Source, build_context, cited, compose
from tests.conftest import tiny_train_overrides
from tests.unit.test_bad_input import _write
from tests.unit.test_chunk import error_line
from tests.unit.test_index import HEART, ask, build, make_docs

# Six passages on separate topics; each ends with the same words so BM25 finds the others as negatives.
PASSAGES = ["Cardiac arrhythmia follows potassium imbalance, reported in the clinic study.",
            "Asthma exacerbation narrows bronchioles during exercise, reported in the clinic study.",
            "Stroke rehabilitation restores vocabulary through repetition, reported in the clinic study.",
            "Osteoporosis weakens vertebrae without calcium, reported in the clinic study.",
            "Intestinal microbiome diversity prevents ulceration, reported in the clinic study.",
            "Ultraviolet radiation triggers melanoma in fair skin, reported in the clinic study."]


# ------------------------------------------------------------------------------------ a real chat endpoint
class ChatStub:
    """What an OpenAI-compatible server received, and how it answers: ok, garbage, no_choices, error500,
    error404, hang, trickle (a slow body), stream_broken (a stream that turns to garbage), no_stream (one JSON
    completion even when asked to stream) or flaky (HTTP 500 for the first `failures` requests, then ok)."""

    def __init__(self, url: str):
        self.url = url
        self.requests: list[dict] = []
        self.behaviour = "ok"
        self.failures = 0
        self.reply = lambda body: "Yes, it does [1]."


class _ChatHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # the http.server API
        stub: ChatStub = self.server.stub
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        stub.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        mode = stub.behaviour
        if mode == "flaky":
            mode = "error500" if len(stub.requests) <= stub.failures else "ok"
        if mode == "hang":
            time.sleep(3)
        if mode == "trickle":  # headers at once, then the body a byte every 0.2 s
            payload = json.dumps({"choices": [{"message": {"content": "x" * 40}}]}).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                for byte in payload:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return
        if body.get("stream") and mode in ("ok", "stream_broken", "stream_error"):
            return self._stream(stub.reply(body).split(" "), broken=mode)
        if mode == "error500":
            return self._send(500, b"internal error")
        if mode == "error404":
            return self._send(404, b"no such route")
        if mode == "garbage":
            return self._send(200, b"<html>this is not JSON</html>")
        if mode == "no_choices":
            return self._send(200, json.dumps({"object": "error", "message": "overloaded"}).encode())
        reply = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": stub.reply(body)},
                              "finish_reason": "stop"}]}
        self._send(200, json.dumps(reply).encode())

    def _stream(self, words: list[str], broken: str) -> None:
        """Server-sent events, one word each with a pause between them, as vLLM and OpenAI stream a reply;
        `broken`: stream_broken turns to garbage after two words, stream_error sends an error event there."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i, word in enumerate(words):
                if broken != "ok" and i == 2:
                    self.wfile.write(b"data: {not json\n\n" if broken == "stream_broken" else
                                     b'data: {"error": {"message": "out of memory"}}\n\n')
                    break
                chunk = {"choices": [{"index": 0, "delta": {"content": word if i == 0 else " " + word}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.05)
            else:
                self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:
            pass

    def _send(self, code: int, payload: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (a timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def _no_endpoint_settings_from_the_environment(monkeypatch):
    """The endpoint tests count attempts and time limits: the user's own settings must not leak in."""
    for name in ("OPENAI_API_KEY", "RAGTUNE_GENERATOR_TIMEOUT", "RAGTUNE_GENERATOR_RETRIES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    server.daemon_threads = True
    server.block_on_close = False
    server.stub = ChatStub(f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.stub
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RecordingGenerator:
    """Remembers the messages it got; answers with a fixed text; counts tokens as words."""

    name = "recorder"

    def __init__(self, answer: str = "Blood pressure matters [1]."):
        self.answer, self.messages = answer, []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, messages, max_new_tokens=256, temperature=0.0):
        self.messages.append(messages)
        return self.answer


@pytest.fixture
def index(cli, tmp_path, tiny_embedder) -> Path:
    docs = make_docs(tmp_path / "docs")
    _write(docs / "heart_long.txt", "\n\n".join(f"Heart study {i}: {HEART}" for i in range(6)))
    path = tmp_path / "index"
    build(cli, docs, path, tiny_embedder)
    return path


def pipeline(index_path, generator=None, reranker=None, **settings) -> RAGPipeline:
    from ragtune.index import Index
    from ragtune.models.device import Placement

    return RAGPipeline(Index(index_path, Placement("cpu", "fp32", "tests")), reranker, generator,
                       RAGSection(**settings))


# ------------------------------------------------------------------------------------------- query, retrieval
def test_query_json_gives_ranked_chunks_with_sources_as_indexed(cli, tmp_path, tiny_embedder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_docs(Path("docs"))
    build(cli, "docs", "idx", tiny_embedder)  # relative paths: the sources stay as given
    answer = ask(cli, "idx", "calcium intake and fracture healing", "-k", "4", "first_stage=bm25")
    assert answer["question"] == "calcium intake and fracture healing" and answer["answer"] is None
    sources = answer["sources"]
    assert 1 <= len(sources) <= 4
    for source in sources:
        assert set(source) >= {"n", "id", "source", "title", "page", "score", "text", "metadata"}
    assert [s["score"] for s in sources] == sorted((s["score"] for s in sources), reverse=True)
    assert sources[0]["source"] == "docs/bone.pdf" and sources[0]["page"] in (1, 2)
    assert {s["source"] for s in sources} <= {"docs/bone.pdf", "docs/heart.txt", "docs/lung.md", "docs/brain.html",
                                              "docs/gut.jsonl"}
    assert "retrieve_ms" in answer["timings"]
    gut = ask(cli, "idx", "gut bacteria stomach ulcer", "-k", "1", "first_stage=bm25")["sources"][0]
    assert gut["metadata"] == {"id": "g1", "record": 1} and gut["page"] is None


def test_query_bad_settings_are_one_line_errors(cli, index, tmp_path):
    from ragtune.errors import ConfigError

    error_line(cli("query", index, "q", "--no-generate", "first_stage=sparse"), "first_stage")
    error_line(cli("query", index, "q", "--no-generate", "prompt=no slots here"), "{context}", "{question}")
    error_line(cli("query", tmp_path / "nowhere", "q", "--no-generate"), "not a ragtune index")
    for empty in ("", "   \n"):
        error_line(cli("query", index, empty, "--no-generate"), "the question is empty")
    with pytest.raises(ConfigError, match="the question is empty"):
        pipeline(index, first_stage="bm25").retrieve(" ")


def test_a_prompt_with_stray_braces_is_refused_before_anything_loads(cli, index, tmp_path):
    config = _write(tmp_path / "q.yaml", "prompt: 'Reply as JSON {\"answer\": \"...\"}. {context} {question}'\n")
    error_line(cli("query", index, "q", "--no-generate", "-c", config), str(config), "{{")
    escaped = _write(tmp_path / "ok.yaml", "prompt: 'Reply as JSON {{\"answer\": 1}}. {context} {question}'\n")
    generator = RecordingGenerator()
    from ragtune.config import load_config

    compose("q?", _sources(1), generator, load_config("query", escaped, []))
    assert generator.messages[0][0]["content"].startswith('Reply as JSON {"answer": 1}. [1] (doc0.txt')


def test_min_score_drops_passages_below_it(index):
    rag = pipeline(index, first_stage="bm25", k=10, max_per_source=10)
    scores = [s.score for s in rag.retrieve("blood pressure heart rhythm")]
    assert len(scores) >= 3 and len(set(scores)) >= 2
    cut = sorted(set(scores))[len(set(scores)) // 2]
    kept = pipeline(index, first_stage="bm25", k=10, max_per_source=10, min_score=cut).retrieve("blood pressure heart rhythm")
    assert [s.score for s in kept] == [s for s in scores if s >= cut] and len(kept) < len(scores)
    assert [s.n for s in kept] == list(range(1, len(kept) + 1))
    assert pipeline(index, first_stage="bm25", min_score=1e9).retrieve("blood pressure") == []


def test_max_per_source_limits_passages_from_one_document(index):
    question = "cardiac arrest blood pressure cholesterol heart rhythm"
    for limit in (1, 2, 3):
        sources = pipeline(index, first_stage="bm25", k=6, max_per_source=limit).retrieve(question)
        counts = {}
        for s in sources:
            counts[s.source] = counts.get(s.source, 0) + 1
        assert max(counts.values()) == limit, counts  # heart_long.txt has more than 3 matching chunks
    texts = [s.text for s in pipeline(index, first_stage="bm25", k=10, max_per_source=10).retrieve(question)]
    assert len(texts) == len(set(texts))


def test_identical_passages_from_two_files_are_given_once(cli, tmp_path, tiny_embedder):
    docs = tmp_path / "docs"
    _write(docs / "a.txt", "Calcium intake protects bone density.")
    _write(docs / "b.txt", "Calcium intake protects bone density.")
    _write(docs / "c.txt", "Migraine pain and sleep quality.")
    build(cli, docs, tmp_path / "idx", tiny_embedder)
    sources = pipeline(tmp_path / "idx", first_stage="bm25", k=5).retrieve("calcium bone density")
    assert [s.text for s in sources] == ["Calcium intake protects bone density."]


def test_rerank_orders_passages_by_the_cross_encoder(cli, index, tiny_cross_encoder, tmp_path):
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder

    from ragtune.models.device import Placement
    from ragtune.retrieval.rerank import Reranker

    model = CrossEncoder(tiny_cross_encoder, device="cpu")
    with torch.no_grad():  # a fresh head scores everything near 0.5; spread the scores so the order shows
        model[0].auto_model.classifier.weight.mul_(300)
    question = "heart rhythm and blood pressure"
    plain = pipeline(index, first_stage="bm25", k=6, rerank_k=8, max_per_source=10).retrieve(question)
    reranked = pipeline(index, reranker=Reranker(model, Placement("cpu", "fp32", "tests")), first_stage="bm25", k=6,
                        rerank_k=8, max_per_source=10)
    timings = {}
    sources = reranked.retrieve(question, timings)
    expected = model.predict([(question, s.text) for s in sources])
    np.testing.assert_allclose([s.score for s in sources], expected, atol=1e-5)
    assert [s.score for s in sources] == sorted((s.score for s in sources), reverse=True)
    assert "rerank_ms" in timings
    assert {s.id for s in sources} <= {h.id for h in pipeline(index, first_stage="bm25", k=8, max_per_source=10)
                                       .retrieve(question)}
    assert [s.id for s in sources] != [s.id for s in plain]
    cut = sorted(s.score for s in sources)[2]
    thresholded = pipeline(index, reranker=Reranker(model, Placement("cpu", "fp32", "tests")), first_stage="bm25", k=6,
                           rerank_k=8, max_per_source=10, min_score=cut).retrieve(question)
    assert [s.id for s in thresholded] == [s.id for s in sources if s.score >= cut]
    # through the CLI
    code, out, err = cli("--json", "query", index, question, "--rerank", tiny_cross_encoder, "--no-generate",
                         "-k", "3")
    assert code == 0, err
    result = json.loads(out)
    assert len(result["sources"]) == 3 and "rerank_ms" in result["timings"]


def test_rerank_max_length_truncates_the_pairs(cli, index, tiny_cross_encoder):
    full = RAGPipeline.from_index(str(index), tiny_cross_encoder, settings=RAGSection(first_stage="bm25"))
    short = RAGPipeline.from_index(str(index), tiny_cross_encoder,
                                   settings=RAGSection(first_stage="bm25", rerank_max_length=12))
    assert short.reranker.max_length == 12 and full.reranker.max_length > 12
    question = "heart rhythm and blood pressure"
    texts = [s.text for s in full.retrieve(question)]
    assert any(full.reranker.score(question, [t])[0] != short.reranker.score(question, [t])[0] for t in texts)
    code, out, err = cli("--json", "query", index, question, "--rerank", tiny_cross_encoder, "--no-generate",
                         "rerank_max_length=12")
    assert code == 0, err
    assert json.loads(out)["sources"]


# ------------------------------------------------------------------------------ context, prompt, citations
def _sources(n: int, words: int = 10) -> list[Source]:
    return [Source(i + 1, f"id{i}", f"doc{i}.txt", "", 3 if i == 0 else None, 1.0 - i / 10,
                   " ".join(f"w{i}x{j}" for j in range(words))) for i in range(n)]


def test_the_context_keeps_what_fits_the_token_budget():
    def count(text: str) -> int:
        return len(text.split())

    context, kept = build_context(_sources(5), count, budget=30)  # each block: "[n]", "(docN.txt)" + 10 words
    assert [s.id for s in kept] == ["id0", "id1"] and [s.n for s in kept] == [1, 2]
    assert context.split("\n\n") == [f"[1] (doc0.txt, page 3) {_sources(1)[0].text}",
                                     f"[2] (doc1.txt) {_sources(2)[1].text}"]
    assert len(build_context(_sources(5), count, budget=1000)[1]) == 5
    assert [s.id for s in build_context(_sources(5), count, budget=3)[1]] == ["id0"]  # never an empty context
    assert build_context([], count, 10) == ("", [])


def test_the_default_prompt_holds_the_question_and_numbered_sources():
    generator = RecordingGenerator()
    answer = compose("does blood pressure matter?", _sources(3), generator, RAGSection(context_tokens=30))
    [messages] = generator.messages
    assert [m["role"] for m in messages] == ["user"]
    prompt = messages[0]["content"]
    assert prompt.startswith(DEFAULT_PROMPT.split("{context}")[0])
    assert prompt.endswith("Question: does blood pressure matter?")
    assert "[1] (doc0.txt, page 3) w0x0" in prompt and "[2] (doc1.txt) w1x0" in prompt and "[3]" not in prompt
    assert answer.answer == "Blood pressure matters [1]." and [s.n for s in answer.sources] == [1, 2]
    assert "generate_ms" in answer.timings
    generator = RecordingGenerator()
    compose("q?", _sources(1), generator, RAGSection(system="be brief", prompt="C: {context} Q: {question}"))
    assert generator.messages[0] == [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": f"C: [1] (doc0.txt, page 3) {_sources(1)[0].text} "
                                                                 "Q: q?"}]


def test_cited_parses_the_source_numbers():
    sources = _sources(4)
    assert [s.n for s in cited("A [1] and B [3]; again [1].", sources)] == [1, 3]
    assert [s.n for s in cited("both [2, 4] and [3][1]", sources)] == [1, 2, 3, 4]
    assert cited("no citation, [9] is not a source, [x] is not a number", sources) == []
    assert cited("", sources) == [] and cited(None, sources) == []


def test_pipeline_answer_with_and_without_a_generator(index):
    generator = RecordingGenerator("It does [2].")
    rag = pipeline(index, generator=generator, first_stage="bm25", k=3, context_tokens=60)
    answer = rag.answer("blood pressure and cholesterol")
    assert answer.answer == "It does [2]." and 1 <= len(answer.sources) <= 3
    budget = sum(len(f"[{s.n}] ({s.source}) {s.text}".split()) for s in answer.sources)
    assert budget <= 60 or len(answer.sources) == 1
    assert [s.n for s in cited(answer.answer, answer.sources)] == [2] or len(answer.sources) < 2
    retrieval_only = rag.answer("blood pressure and cholesterol", generate=False)
    assert retrieval_only.answer is None and len(generator.messages) == 1
    assert retrieval_only.to_dict()["sources"][0]["id"] == answer.sources[0].id


# ------------------------------------------------------------------------------------------------ generators
def test_local_generator_answers_through_the_cli(cli, index, tiny_llm):
    code, out, err = cli("--json", "query", index, "blood pressure", "--generator", tiny_llm, "-k", "2",
                         "max_new_tokens=6")
    assert code == 0, err
    result = json.loads(out)
    assert isinstance(result["answer"], str) and len(result["sources"]) == 2 and "generate_ms" in result["timings"]
    from ragtune.rag.generators import LocalGenerator, make_generator

    generator = make_generator(tiny_llm)
    assert isinstance(generator, LocalGenerator) and generator.name == tiny_llm
    assert generator.count_tokens("blood pressure") > 0
    text = generator.generate([{"role": "user", "content": "hello"}], max_new_tokens=4)
    assert isinstance(text, str) and text.strip()  # the tiny model's words are random, but there are some
    assert generator.generate([{"role": "user", "content": "hello"}], max_new_tokens=4) == text  # greedy: repeatable
    assert generator.count_tokens(text) <= 4 + 2  # at most the new tokens asked for (plus special tokens)
    again = json.loads(cli("--json", "query", index, "blood pressure", "--generator", tiny_llm, "-k", "2",
                           "max_new_tokens=6")[1])
    assert again["answer"] == result["answer"] and result["answer"].strip()


def test_openai_generator_sends_the_context_and_question(cli, index, chat_server):
    chat_server.reply = lambda body: "Cholesterol levels rise with age [1]."
    code, out, err = cli("--json", "query", index, "do cholesterol levels rise?", "--generator", chat_server.url,
                         "--generator-model", "served-model", "-k", "2", "first_stage=bm25")
    assert code == 0, err
    result = json.loads(out)
    assert result["answer"] == "Cholesterol levels rise with age [1]."
    [request] = chat_server.requests
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert body["model"] == "served-model" and body["temperature"] == 0.0 and body["max_tokens"] == 256
    [message] = body["messages"]
    assert message["role"] == "user" and message["content"].endswith("Question: do cholesterol levels rise?")
    for source in result["sources"]:
        assert f"[{source['n']}] ({source['source']}) {source['text']}" in message["content"]
    code, out, err = cli("query", index, "do cholesterol levels rise?", "--generator", chat_server.url + "/",
                         "--generator-model", "served-model")
    assert code == 0, err
    assert "Cholesterol levels rise with age [1]." in out and chat_server.requests[-1]["path"] == "/v1/chat/completions"


def test_openai_generator_sends_the_api_key(chat_server):
    from ragtune.rag.generators import OpenAIGenerator

    generator = OpenAIGenerator(chat_server.url, "m", api_key="sk-test")
    assert generator.generate([{"role": "user", "content": "hi"}], 5, 0.5) == "Yes, it does [1]."
    headers = {k.lower(): v for k, v in chat_server.requests[0]["headers"].items()}
    assert headers["authorization"] == "Bearer sk-test"
    assert chat_server.requests[0]["body"]["max_tokens"] == 5 and chat_server.requests[0]["body"]["temperature"] == 0.5


@pytest.mark.parametrize("behaviour,needles,requests", [
    ("garbage", ["not a chat completion", "after 2 attempts"], 2),
    ("no_choices", ["not a chat completion", "'choices'"], 2),
    ("error500", ["HTTP 500", "after 2 attempts"], 2),
    ("error404", ["HTTP 404"], 1),  # a client error is not retried
])
def test_openai_generator_bad_replies_end_in_one_error(chat_server, behaviour, needles, requests):
    from ragtune.errors import GeneratorError
    from ragtune.rag.generators import OpenAIGenerator

    chat_server.behaviour = behaviour
    generator = OpenAIGenerator(chat_server.url, "m", retries=2, backoff=0.01)
    with pytest.raises(GeneratorError) as info:
        generator.generate([{"role": "user", "content": "hi"}])
    message = str(info.value)
    assert "\n" not in message and chat_server.url in message and "'m'" in message
    for needle in needles:
        assert needle in message
    assert len(chat_server.requests) == requests


@pytest.fixture
def raw_server():
    """A TCP server that answers every connection with fixed bytes (set `.reply`) and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    state = {"reply": b"", "connections": 0, "stop": False}

    def serve():
        while not state["stop"]:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                    conn.sendall(state["reply"])
                except OSError:
                    pass
                state["connections"] += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    yield state
    state["stop"] = True
    thread.join()
    listener.close()


@pytest.mark.parametrize("reply,needle", [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "broken HTTP reply"),  # not HTTP at all
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"choi", "broken HTTP reply"),
])
def test_openai_generator_broken_http_is_one_error(raw_server, reply, needle):
    from ragtune.errors import GeneratorError
    from ragtune.rag.generators import OpenAIGenerator

    raw_server["reply"] = reply
    with pytest.raises(GeneratorError, match=needle) as info:
        OpenAIGenerator(raw_server["url"], "m", retries=2, backoff=0.01).generate([{"role": "user", "content": "q"}])
    assert "after 2 attempts" in str(info.value) and raw_server["connections"] == 2


def test_openai_generator_streams_the_reply_as_it_arrives(chat_server):
    from ragtune.errors import GeneratorError
    from ragtune.rag.generators import OpenAIGenerator

    chat_server.reply = lambda body: "Yes, potassium imbalance does [1]."
    generator = OpenAIGenerator(chat_server.url, "stub", retries=1)
    arrivals, pieces = [], []
    for piece in generator.stream([{"role": "user", "content": "q"}], 16):
        arrivals.append(time.monotonic())
        pieces.append(piece)
    assert "".join(pieces) == "Yes, potassium imbalance does [1]." and len(pieces) == 5
    assert arrivals[-1] - arrivals[0] > 0.1  # piece by piece, not one block at the end
    assert chat_server.requests[-1]["body"]["stream"] is True
    chat_server.behaviour = "stream_broken"
    with pytest.raises(GeneratorError, match="stream broke off"):
        list(generator.stream([{"role": "user", "content": "q"}], 16))
    chat_server.behaviour = "stream_error"  # vLLM's mid-stream error event: an error, not a shorter answer
    with pytest.raises(GeneratorError, match="out of memory"):
        list(generator.stream([{"role": "user", "content": "q"}], 16))
    chat_server.behaviour = "ok"
    chat_server.reply = lambda body: "Yes."
    assert list(generator.stream([{"role": "user", "content": "q"}], 16)) == ["Yes."]


def test_a_stream_request_to_a_down_or_non_streaming_endpoint(chat_server):
    from ragtune.errors import GeneratorError
    from ragtune.rag.generators import OpenAIGenerator

    with pytest.raises(GeneratorError, match="unreachable"):
        list(OpenAIGenerator(f"http://127.0.0.1:{closed_port()}/v1", "stub", retries=2, backoff=0.01).stream(
            [{"role": "user", "content": "q"}]))
    chat_server.behaviour = "flaky"
    chat_server.failures = 1
    generator = OpenAIGenerator(chat_server.url, "stub", retries=2, backoff=0.01)
    assert "".join(generator.stream([{"role": "user", "content": "q"}])) == "Yes, it does [1]."  # retried once
    chat_server.behaviour = "no_stream"  # a server that ignores "stream": its one completion is one piece
    assert list(generator.stream([{"role": "user", "content": "q"}])) == ["Yes, it does [1]."]


def test_openai_generator_retries_a_server_error_then_succeeds(chat_server):
    from ragtune.rag.generators import OpenAIGenerator

    chat_server.behaviour, chat_server.failures = "flaky", 2
    generator = OpenAIGenerator(chat_server.url, "m", retries=3, backoff=0.01)
    assert generator.generate([{"role": "user", "content": "hi"}]) == "Yes, it does [1]."
    assert len(chat_server.requests) == 3


def test_openai_generator_down_or_hanging_fails_in_bounded_time(chat_server):
    from ragtune.errors import GeneratorError
    from ragtune.rag.generators import OpenAIGenerator

    start = time.monotonic()
    with pytest.raises(GeneratorError, match="unreachable.*after 2 attempts"):
        OpenAIGenerator(f"http://127.0.0.1:{closed_port()}/v1", "m", retries=2, backoff=0.05).generate(
            [{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 10
    chat_server.behaviour = "hang"
    start = time.monotonic()
    with pytest.raises(GeneratorError, match="timed out"):
        OpenAIGenerator(chat_server.url, "m", timeout=1, retries=1).generate([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 10


def test_a_trickling_endpoint_cannot_outlast_the_deadline(chat_server):
    from ragtune.errors import GeneratorError
    from ragtune.rag.generators import OpenAIGenerator

    chat_server.behaviour = "trickle"  # every byte arrives well within the socket timeout; the reply takes 15 s
    start = time.monotonic()
    with pytest.raises(GeneratorError, match="timed out.*after 1 attempts"):
        OpenAIGenerator(chat_server.url, "m", timeout=1, retries=1).generate([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 5


def test_endpoint_settings_come_from_the_environment(chat_server, monkeypatch):
    from ragtune.errors import ConfigError
    from ragtune.rag.generators import make_generator

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("RAGTUNE_GENERATOR_TIMEOUT", "2.5")
    monkeypatch.setenv("RAGTUNE_GENERATOR_RETRIES", "5")
    generator = make_generator(chat_server.url, "m")
    assert (generator.api_key, generator.timeout, generator.retries) == ("sk-test", 2.5, 5)
    generator.generate([{"role": "user", "content": "hi"}])
    assert chat_server.requests[-1]["headers"]["Authorization"] == "Bearer sk-test"
    assert make_generator(chat_server.url, "m", api_key="other", timeout=1, retries=1).retries == 1
    for name, value in [("RAGTUNE_GENERATOR_TIMEOUT", "soon"), ("RAGTUNE_GENERATOR_TIMEOUT", "nan"),
                        ("RAGTUNE_GENERATOR_TIMEOUT", "inf"), ("RAGTUNE_GENERATOR_RETRIES", "0"),
                        ("RAGTUNE_GENERATOR_RETRIES", "2.5")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=f"{name}='{value}'"):
            make_generator(chat_server.url, "m")
        monkeypatch.delenv(name)


def test_generator_errors_through_the_cli(cli, index, chat_server):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    error_line(cli("query", index, "q", "--generator", url), url, "--generator-model")
    error_line(cli("query", index, "q", "--generator", url, "--generator-model", "m"), url, "after 3 attempts",
               "--no-generate")
    chat_server.behaviour = "garbage"
    code, out, _ = cli("--json", "query", index, "q", "--generator", chat_server.url, "--generator-model", "m")
    assert code == 2 and "not a chat completion" in json.loads(out)["error"]
    # --no-generate never calls the endpoint
    requests = len(chat_server.requests)
    assert cli("query", index, "q", "--generator", url, "--generator-model", "m", "--no-generate")[0] == 0
    assert len(chat_server.requests) == requests


# ----------------------------------------------------------------------------------------------------- synth
class QuestionWriter:
    """A deterministic stand-in LLM. For each passage it writes a good question (from the passage's two longest
    words), a copy of the passage, a reordering of the good question, and a question about nothing in the corpus;
    asked for an answer it names the passage's longest word."""

    name = "question-writer"

    def __init__(self):
        self.calls = 0

    def __call__(self, body: dict) -> str:  # as the chat stub's reply
        return self.generate(body["messages"])

    def generate(self, messages, max_new_tokens=256, temperature=0.0):
        self.calls += 1
        prompt = messages[-1]["content"]
        passage = prompt.split("Passage:\n", 1)[1].split("\n\nQuestion:")[0]
        words = sorted(set(re.findall(r"[a-z]+", passage.lower())), key=lambda w: (-len(w), w))
        if prompt.startswith("Answer"):
            return f"It comes down to {words[0]}."
        if prompt.startswith("Rewrite"):
            return paraphrase_of(passage)
        a, b = words[:2]
        return "\n".join([f"1. Which findings link {a} and {b} in the clinic study?",
                          f"2) {' '.join(passage.split()[:8])}?",
                          f"- In the clinic study, which findings link {b} and {a}?",
                          "Q4: How do zebras migrate across quantum galaxies?",
                          "ok", ""])


def paraphrase_of(passage: str) -> str:
    """The stand-in's paraphrase: the passage's words backwards after a lead-in line, except for three passages
    that get a copy, a stub and a reply about something else."""
    if "melanoma" in passage:
        return passage
    if "Osteoporosis" in passage:
        return "Bones weaken."
    if "microbiome" in passage:
        return "Zebras migrate across the quantum galaxies every winter in large herds, say the astronomers."
    return "Here is the rewritten passage:\n" + " ".join(reversed(passage.rstrip(".").split())) + "."


@pytest.fixture
def passages(tmp_path) -> Path:
    folder = tmp_path / "passages"
    for i, text in enumerate(PASSAGES):
        _write(folder / f"p{i}.txt", text)
    return folder


@pytest.fixture
def chunks_file(cli, passages, tiny_embedder, tmp_path) -> Path:
    out = tmp_path / "chunks.jsonl"
    assert cli("data", "chunk", passages, "--out", out, "--embedder", tiny_embedder)[0] == 0
    return out


EXPECTED_REMOVED = {"a copy of the chunk": 6, "a near-duplicate": 6, "round-trip miss (source not in the top 5)": 6}


def test_synth_filters_and_files(cli, chunks_file, chat_server, tmp_path):
    writer = QuestionWriter()
    chat_server.reply = writer
    out = tmp_path / "synth"
    code, stdout, err = cli("--json", "data", "synth", chunks_file, "--out", out, "--generator", chat_server.url,
                            "--generator-model", "m", "--questions", "4", "--negatives", "2", "--rag-sft")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["chunks"] == 6 and report["generated"] == 24 and report["kept"] == 6
    assert report["removed"] == EXPECTED_REMOVED
    assert sorted(Path(p).name for p in report["written"]) == ["pairs.jsonl", "rag_sft.jsonl", "rerank.jsonl"]
    assert writer.calls == 6 + 6  # questions for every chunk, an answer for every kept question

    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 6
    by_text = {text: i for i, text in enumerate(PASSAGES)}
    for pair in pairs:
        assert pair["query"].startswith("Which findings link") and pair["document"] in by_text
        assert pair["source"].endswith(f"p{by_text[pair['document']]}.txt")
    rerank = [json.loads(line) for line in (out / "rerank.jsonl").read_text().splitlines()]
    assert len(rerank) == 6 * 3 and sorted({r["label"] for r in rerank}) == [0, 1]
    for pair in pairs:
        rows = [r for r in rerank if r["query"] == pair["query"]]
        assert [r["label"] for r in rows] == [1, 0, 0] and rows[0]["document"] == pair["document"]
        assert all(r["document"] != pair["document"] for r in rows[1:])
    sft = [json.loads(line) for line in (out / "rag_sft.jsonl").read_text().splitlines()]
    assert len(sft) == 6
    for record, pair in zip(sft, pairs):
        user, assistant = record["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"].endswith(f"Question: {pair['query']}")
        assert f"[1] ({pair['source']}) {pair['document']}" in user["content"]  # the source ranks first
        assert "[2] (" in user["content"]
        assert re.fullmatch(r"It comes down to \w+\. \[1\]", assistant["content"])
    # the human report
    code, stdout, err = cli("data", "synth", chunks_file, "--out", tmp_path / "again", "--generator",
                            chat_server.url, "--generator-model", "m", "--questions", "4")
    assert code == 0, err
    assert "24 questions generated from 6 chunks" in stdout and "kept 6" in stdout
    assert "removed as a copy of the chunk: 6" in stdout and not (tmp_path / "again" / "rag_sft.jsonl").exists()


def test_synth_from_an_index_with_the_library(cli, passages, tiny_embedder, tmp_path):
    from ragtune.rag.synth import synth_from

    build(cli, passages, tmp_path / "idx", tiny_embedder, "--chunk-size", "64")  # a chunk per passage
    written, report = synth_from(str(tmp_path / "idx"), str(tmp_path / "out"), QuestionWriter, questions=4,
                                 round_trip_k=3, max_chunks=4)
    assert (report.chunks, report.generated) == (4, 16)
    assert report.removed["a copy of the chunk"] == 4 and report.removed["a near-duplicate"] >= 4
    assert report.kept + sum(report.removed.values()) == 16
    assert report.lines()[0] == "16 questions generated from 4 chunks" and report.lines()[-1] == f"kept {report.kept}"
    assert sorted(p.name for p in written) == ["pairs.jsonl", "rerank.jsonl"]
    queries = [json.loads(line)["query"] for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert len(queries) == report.kept
    # BM25 ranks each good question's passage first, so hybrid retrieval keeps it in the top 3; the dense half
    # may rescue the question about nothing once (its copies are then near-duplicates)
    assert sum(q.startswith("Which findings link") for q in queries) == 4
    assert sum(q.startswith("How do zebras") for q in queries) <= 1


def test_synth_filter_functions():
    from ragtune.rag.synth import copies_chunk, near_duplicate, parse_questions

    chunk = "bone density falls without calcium intake in older adults"
    assert copies_chunk("does bone density fall when calcium intake is low in older adults?", chunk) is False
    assert copies_chunk("why do bone density falls without calcium intake happen?", chunk)
    assert copies_chunk("bone density falls", "bone density falls")  # all of a short chunk
    assert not copies_chunk("what lowers calcium?", chunk)
    assert near_duplicate("what lowers bone density in adults", [set("what lowers bone density in adults".split())])
    assert not near_duplicate("what lowers bone density", [set("how is calcium measured in the lab".split())])
    assert not near_duplicate("anything at all here", [])
    assert parse_questions("1. What is a?\n2) Why b here?\n- How c works?\n• Who d is?\nQ5: When e ends?\nno\n\n") \
        == ["What is a?", "Why b here?", "How c works?", "Who d is?", "When e ends?"]
    assert parse_questions("Here are two questions:\nQuestion 1: What is the median age?\nThe answer to this "
                           "question is:\nWhat a wonderful opportunity to share a story.") == ["What is the median age?"]


def test_synth_clara_writes_stage_1_records_that_train_clara(cli, chunks_file, chat_server, tiny_llm, tmp_path):
    from ragtune.config.clara import ClaraDataSection
    from ragtune.data.clara import load_clara_data
    from ragtune.rag.synth import PARAPHRASE_QUESTION

    writer = QuestionWriter()
    chat_server.reply = writer
    out = tmp_path / "synth"
    code, stdout, err = cli("--json", "data", "synth", chunks_file, "--out", out, "--generator", chat_server.url,
                            "--generator-model", "m", "--questions", "4", "--clara")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["kept"] == 6 and report["paraphrases"] == {
        "generated": 6, "kept": 3,
        "removed": {"a copy of the chunk": 1, "too short": 1, "drifted from the chunk": 1}}
    assert sorted(Path(p).name for p in report["written"]) == ["clara_compress.jsonl", "pairs.jsonl", "rerank.jsonl"]
    assert writer.calls == 6 + 6 + 6  # questions and a paraphrase per chunk, an answer per kept question
    rows = [json.loads(line) for line in (out / "clara_compress.jsonl").read_text().splitlines()]
    restated = [r for r in rows if r["kind"] == "paraphrase"]
    assert len(restated) == 3 and all(r["question"] == PARAPHRASE_QUESTION for r in restated)
    for row in restated:  # the lead-in line is gone; the passage's words are all there, in another order
        (passage,) = row["documents"]
        assert row["answer"] == " ".join(reversed(passage.rstrip(".").split())) + "."
        assert row["source"].endswith(".txt")
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    answered = [r for r in rows if r["kind"] == "qa"]
    assert [(r["documents"], r["question"]) for r in answered] == [([p["document"]], p["query"]) for p in pairs]
    assert all(re.fullmatch(r"It comes down to \w+\.", r["answer"]) for r in answered)
    train, held_out = load_clara_data(ClaraDataSection(train=str(out / "clara_compress.jsonl")), "compress", 4)
    assert len(train) + len(held_out) == 9

    code, _, err = cli("train", "clara", "stage=compress", f"model.name={tiny_llm}",
                       f"data.train={out / 'clara_compress.jsonl'}", f"output.dir={tmp_path / 'clara'}",
                       "compress_rate=4", "doc_max_length=16", "lora.r=4", "lora.alpha=8", "train.max_steps=2",
                       "train.eval_steps=2", "train.save_steps=2", "train.per_device_train_batch_size=4",
                       "eval.generation_samples=1", "eval.max_new_tokens=4", "--allow-regression")
    assert code == 0, err
    assert (tmp_path / "clara" / "final").is_dir()
    # the human report counts the paraphrases too
    code, stdout, err = cli("data", "synth", chunks_file, "--out", tmp_path / "again", "--generator",
                            chat_server.url, "--generator-model", "m", "--clara")
    assert code == 0, err
    assert "6 paraphrases written" in stdout and "paraphrases removed as too short: 1" in stdout
    assert "paraphrases kept 3" in stdout


def test_paraphrase_filters():
    from ragtune.rag.synth import clean_paraphrase, paraphrase_problem

    chunk = ("Vitamin D deficiency weakens bones in older adults and raises the risk of hip fractures after falls, "
             "according to a cohort of 4,000 patients followed for ten years.")
    good = ("In a ten-year cohort of 4,000 patients, older adults lacking vitamin D had weaker bones and more hip "
            "fractures after falls.")
    assert paraphrase_problem(good, chunk) is None
    assert paraphrase_problem(chunk, chunk) == "a copy of the chunk"
    assert paraphrase_problem("Vitamin D matters.", chunk) == "too short"
    assert paraphrase_problem(" ".join([good] * 2), chunk) == "too long"
    assert paraphrase_problem("Three-year randomized field trial.", "Three-year randomized field trial.") \
        == "a copy of the chunk"
    assert paraphrase_problem("The National Institute of Ophthalmology reviewed thousands of clinical records "
                              "proving vitamin deficiency weakens bones.", chunk) == "drifted from the chunk"
    assert paraphrase_problem("The weather in the mountains changes quickly and hikers should carry extra "
                              "layers of clothing.", chunk) == "drifted from the chunk"
    assert clean_paraphrase("Here is the rewritten passage:\n\n" + good + "\n") == good
    assert clean_paraphrase("Short: fine.") == "Short: fine."
    assert clean_paraphrase("First line.\nSecond line.") == "First line. Second line."


def test_synth_keeps_an_earlier_runs_files_unless_told(cli, chunks_file, chat_server, tmp_path):
    chat_server.reply = QuestionWriter()
    out = tmp_path / "synth"
    args = ["data", "synth", chunks_file, "--out", out, "--generator", chat_server.url, "--generator-model", "m"]
    code, _, err = cli(*args)
    assert code == 0, err
    first = (out / "pairs.jsonl").read_text()
    (out / "pairs.jsonl").write_text("edited by hand\n")
    error_line(cli(*args), str(out), "pairs.jsonl, rerank.jsonl", "--overwrite")
    assert (out / "pairs.jsonl").read_text() == "edited by hand\n"
    code, _, err = cli(*args, "--overwrite")
    assert code == 0, err
    assert (out / "pairs.jsonl").read_text() == first


def test_synth_where_nothing_survives_is_one_line_error(cli, chunks_file, chat_server, tmp_path):
    chat_server.reply = lambda body: "How do zebras migrate across quantum galaxies?\nWhat about the moon landing?"
    out = tmp_path / "synth"
    error_line(cli("data", "synth", chunks_file, "--out", out, "--generator", chat_server.url, "--generator-model",
                   "m"), "no synthetic question survived", "round-trip miss")
    assert not out.exists()


def test_synth_with_the_local_tiny_llm_ends_cleanly(cli, passages, tiny_embedder, tiny_llm, tmp_path, monkeypatch):
    # The real local-HF path, through the CLI: the tiny model's weights are random, so whether any of its questions
    # survives the filters is chance; what must hold is that it was asked once per chunk, answered with text, and
    # the run ended in a report or in the one-line "nothing survived" error with the counts.
    from ragtune.rag.generators import LocalGenerator

    replies = []
    generate_many = LocalGenerator.generate_many

    def recording(self, *args, **kwargs):  # the chunks' questions are asked in one batched call
        answered = generate_many(self, *args, **kwargs)
        replies.extend(r.text for r in answered)
        return answered

    monkeypatch.setattr(LocalGenerator, "generate_many", recording)
    build(cli, passages, tmp_path / "idx", tiny_embedder, "--chunk-size", "64")
    out = tmp_path / "synth"
    code, stdout, err = cli("--json", "data", "synth", tmp_path / "idx", "--out", out, "--generator", tiny_llm,
                            "--questions", "2", "--max-chunks", "2")
    assert "Traceback" not in stdout + err
    assert len(replies) == 2 and all(isinstance(r, str) and r.strip() for r in replies)
    if code == 0:
        report = json.loads(stdout)
        assert report["chunks"] == 2 and report["kept"] > 0 and (out / "pairs.jsonl").is_file()
    else:
        error = json.loads(stdout)["error"]
        assert code == 2 and "no synthetic question survived" in error and "from 2 chunks" in error
        assert not (out / "pairs.jsonl").exists()


def test_synth_bad_input_is_one_line_error(cli, tmp_path, chat_server, chunks_file):
    args = ["--generator", chat_server.url, "--generator-model", "m", "--out", tmp_path / "o"]
    error_line(cli("data", "synth", _write(tmp_path / "p.jsonl", '{"query": "a", "document": "b"}\n'), *args),
               "not a ragtune chunk")
    error_line(cli("data", "synth", tmp_path / "missing.jsonl", *args), "missing.jsonl")
    error_line(cli("data", "synth", chunks_file, "--generator", chat_server.url, "--out", tmp_path / "o"),
               "--generator-model")


@pytest.fixture
def synth_out(cli, chunks_file, chat_server, tmp_path) -> Path:
    chat_server.reply = QuestionWriter()
    out = tmp_path / "synth"
    assert cli("data", "synth", chunks_file, "--out", out, "--generator", chat_server.url, "--generator-model", "m",
               "--questions", "4", "--rag-sft")[0] == 0
    return out


def test_synth_pairs_and_rag_sft_train_the_embedder_and_the_llm(cli, synth_out, tiny_embedder, tiny_llm, tmp_path):
    code, _, err = cli("train", "embed", f"data.train={synth_out / 'pairs.jsonl'}",
                       *tiny_train_overrides(tiny_embedder, tmp_path / "embed"), "train.max_steps=2",
                       "train.per_device_train_batch_size=4", "--allow-regression")
    assert code == 0, err
    assert (tmp_path / "embed" / "final").is_dir()
    code, _, err = cli("train", "llm", f"data.train={synth_out / 'rag_sft.jsonl'}", f"model.name={tiny_llm}",
                       f"output.dir={tmp_path / 'llm'}", "train.max_steps=2", "train.eval_steps=2",
                       "train.save_steps=2", "train.per_device_train_batch_size=2", "max_length=1024",
                       "eval.generation_samples=1", "eval.max_new_tokens=4", "data.max_eval_samples=2",
                       "--allow-regression")
    assert code == 0, err
    assert (tmp_path / "llm" / "final" / "adapter_config.json").is_file()


def test_the_readme_walkthrough_from_a_folder_to_a_cited_answer(cli, passages, chat_server, tiny_embedder, tmp_path):
    # The README's five commands, offline: tiny models, and the chat stub standing in for the LLM.
    llm = ["--generator", chat_server.url, "--generator-model", "m"]
    index, synth, run = tmp_path / "my-index", tmp_path / "synth", tmp_path / "runs" / "my-embed"
    assert cli("index", "build", passages, "--out", index, "--embedder", tiny_embedder)[0] == 0
    chat_server.reply = QuestionWriter()
    code, _, err = cli("data", "synth", index, "--out", synth, *llm)
    assert code == 0, err
    code, _, err = cli("train", "embed", f"data.train={synth / 'pairs.jsonl'}", *tiny_train_overrides(tiny_embedder, run),
                       "--allow-regression")
    assert code == 0, err
    code, _, err = cli("index", "build", passages, "--out", index, "--embedder", run / "final", "--overwrite")
    assert code == 0, err
    chat_server.reply = lambda body: "Regular exercise lowers it [1]."
    code, out, err = cli("--json", "query", index, "What lowers blood pressure?", *llm)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["answer"] == "Regular exercise lowers it [1]." and answer["sources"]
    assert answer["sources"][0]["n"] == 1 and Path(answer["sources"][0]["source"]).parent == passages
    code, out, _ = cli("--json", "index", "info", index)
    assert code == 0 and Path(json.loads(out)["embedder"]) == run / "final"  # the tuned embedder serves it


def test_synth_rerank_jsonl_trains_the_reranker_with_its_own_negatives(cli, synth_out, tiny_cross_encoder,
                                                                       tmp_path):
    code, _, err = cli("train", "rerank", f"data.train={synth_out / 'rerank.jsonl'}",
                       f"model.name={tiny_cross_encoder}", f"output.dir={tmp_path / 'rerank'}", "train.max_steps=2",
                       "train.eval_steps=2", "train.save_steps=2", "train.per_device_train_batch_size=4",
                       "data.hard_negatives=null", "--allow-regression")
    assert code == 0, err
    assert (tmp_path / "rerank" / "final").is_dir()


def test_rerank_jsonl_labels_survive_loading(synth_out):
    from ragtune.data.formats import normalise
    from ragtune.data.rerank import groups_from_examples
    from ragtune.ingest.readers import read_rows

    groups = groups_from_examples(normalise(list(read_rows(synth_out / "rerank.jsonl"))))
    assert len(groups) == 6
    assert all(len(g.positives) == 1 and len(g.negatives) == 3 for g in groups)


# ------------------------------------------------------------------------------------------------- eval rag
def beir_dir(folder: Path, answer_field: str = "final_decision", top_level: bool = False,
             long_answer: str | None = None, train_split: bool = False) -> Path:
    """Six passages; q1-q3 are answered by their gold passage's rare words; q4's words are only in d5, not in
    its gold d4. `long_answer` goes into every query's metadata; `train_split` writes the same qrels as train too."""
    corpus = [{"_id": f"d{i + 1}", "title": "", "text": text} for i, text in enumerate(PASSAGES)]
    questions = [("q1", "arrhythmia and potassium", "d1", "yes"), ("q2", "asthma exacerbation bronchioles", "d2", "no"),
                 ("q3", "stroke rehabilitation vocabulary", "d3", "maybe"),
                 ("q4", "microbiome diversity ulceration", "d4", "yes")]
    answers = {"final_decision": ["yes", "no", "maybe", "yes"], "answer": ["yes", "Yes.", "no", "yes it is"]}
    queries = []
    for (qid, text, _, _), answer in zip(questions, answers[answer_field]):
        record = {"_id": qid, "text": text}
        record.update({answer_field: answer} if top_level else {"metadata": {answer_field: answer}})
        if long_answer is not None:
            record.setdefault("metadata", {})["long_answer"] = long_answer
        queries.append(record)
    _write(folder / "corpus.jsonl", "".join(json.dumps(r) + "\n" for r in corpus))
    _write(folder / "queries.jsonl", "".join(json.dumps(r) + "\n" for r in queries))
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, _, d, _ in questions)
    for split in ("test", "train") if train_split else ("test",):
        _write(folder / "qrels" / f"{split}.tsv", qrels)
    return folder


def test_eval_rag_metrics_by_hand(cli, chat_server, tiny_embedder, tmp_path):
    data = beir_dir(tmp_path / "beir")
    chat_server.reply = lambda body: "yes [1]"
    dense = f"dense:{tiny_embedder}"
    code, out, err = cli("--json", "eval", "rag", "--data", data, "-p", "bm25", "-p", dense, "--generator",
                         chat_server.url, "--generator-model", "m", "-k", "2", "--out", tmp_path / "out")
    assert code == 0, err
    systems = {s["name"]: s for s in json.loads(out)["systems"]}
    assert sorted(systems) == sorted(["majority (yes)", "bm25 -> m", f"{dense} -> m"])
    # bm25: q1-q3 find their gold passage first, q4 never; every answer says yes and cites [1]
    # (gold yes, no, maybe, yes: macro-F1 = (F1 yes 2/3 + 0 + 0) / 3)
    assert systems["bm25 -> m"]["metrics"] == {"recall@2": 0.75, "accuracy": 0.5, "recall_yes": 1.0,
                                               "recall_no": 0.0, "recall_maybe": 0.0, "macro_f1": 0.2222,
                                               "no_label": 0.0, "cites_gold": 0.75}
    assert systems["majority (yes)"]["metrics"]["macro_f1"] == 0.2222
    example = systems["bm25 -> m"]["examples"][0]
    assert example == {"question": "arrhythmia and potassium", "answer": "yes [1]", "reference": "yes",
                       "cited": ["d1"], "gold": ["d1"], "predicted": "yes"}
    dense_metrics = systems[f"{dense} -> m"]["metrics"]
    assert dense_metrics["accuracy"] == 0.5  # the answers do not depend on retrieval here
    assert 0 <= dense_metrics["cites_gold"] <= dense_metrics["recall@2"] <= 1
    assert len(chat_server.requests) == 8
    prompt = chat_server.requests[0]["body"]["messages"][-1]["content"]
    assert prompt.endswith("Question: arrhythmia and potassium") and f"[1] (d1) {PASSAGES[0]}" in prompt
    saved = json.loads((tmp_path / "out" / "rag_results.json").read_text())
    assert saved["systems"][1]["metrics"] == systems["bm25 -> m"]["metrics"]
    table = (tmp_path / "out" / "rag_results.md").read_text()
    assert "| `bm25 -> m` | 0.5000 | 1.0000 | 0.0000 | 0.0000 | 0.2222 | 0.0000 | 0.7500 | 0.7500 |" in table
    assert "| `majority (yes)` | 0.5000 | 1.0000 | 0.0000 | 0.0000 | 0.2222 | 0.0000 |  |  |" in table
    assert saved["systems"][1]["per_query"] == {"q1": 1.0, "q2": 0.0, "q3": 0.0, "q4": 1.0}  # gold yes, no, maybe, yes
    page = (tmp_path / "out" / "rag_results.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page and "http" not in page
    assert '<section id="per-query">' in page and "0 queries gained and 0 lost the right label (1/0)" in page


def test_eval_rag_exact_match_and_f1_without_labels(cli, chat_server, tmp_path):
    data = beir_dir(tmp_path / "beir", answer_field="answer", top_level=True)
    chat_server.reply = lambda body: "yes [1]"
    code, out, err = cli("--json", "eval", "rag", "--data", data, "-p", "bm25", "--generator", chat_server.url,
                         "--generator-model", "m", "-k", "2", "--labels", "", "--answer-field", "answer")
    assert code == 0, err
    [system] = json.loads(out)["systems"]  # no label set: no majority system
    # references yes / Yes. / no / "yes it is": EM 1, 1, 0, 0; F1 1, 1, 0, 0.5 (the [1] mark is not the answer)
    assert system["metrics"] == {"recall@2": 0.75, "exact_match": 0.5, "f1": 0.625, "cites_gold": 0.75}


def test_eval_rag_retrieval_only(cli, chat_server, tmp_path):
    data = beir_dir(tmp_path / "beir")
    rows = [json.loads(line) for line in (data / "queries.jsonl").read_text().splitlines()]
    _write(data / "queries.jsonl", "".join(json.dumps({"_id": r["_id"], "text": r["text"]}) + "\n" for r in rows))
    # (no answers: none are needed without generation)
    code, out, err = cli("--json", "eval", "rag", "--data", data, "-p", "bm25", "--no-generate", "-k", "2")
    assert code == 0, err
    assert json.loads(out)["systems"][0]["name"] == "bm25"
    assert json.loads(out)["systems"][0]["metrics"] == {"recall@2": 0.75}
    error_line(cli("eval", "rag", "--data", data, "-p", "bm25", "--no-generate", "--generator", chat_server.url,
                   "--generator-model", "m"), "--no-generate", "drop --generator")
    assert not chat_server.requests


def test_eval_rag_human_table(cli, chat_server, tmp_path):
    data = beir_dir(tmp_path / "beir")
    code, out, err = cli("eval", "rag", "--data", data, "-p", "bm25", "--generator", chat_server.url,
                         "--generator-model", "m", "--max-queries", "2")
    assert code == 0, err
    assert "2 questions" in out and "bm25 -> m" in out


def test_eval_rag_bad_input_is_one_line_error(cli, chat_server, tmp_path):
    data = beir_dir(tmp_path / "beir")
    common = ["--generator", chat_server.url, "--generator-model", "m"]
    error_line(cli("eval", "rag", "--data", data, "-p", "bm25", *common, "--answer-field", "verdict"),
               "queries.jsonl:1:", "'verdict'", "--answer-field")
    rows = (data / "queries.jsonl").read_text().splitlines()
    rows[2] = json.dumps({"_id": "q3", "text": "stroke rehabilitation vocabulary", "metadata": {}})
    (data / "queries.jsonl").write_text("\n".join(rows) + "\n")
    error_line(cli("eval", "rag", "--data", data, "-p", "bm25", *common), "queries.jsonl:3:", "'final_decision'")
    error_line(cli("eval", "rag", "--data", data, "-p", "bm25", "-p", "bm25", "-p", "bm25", "--generator",
                   chat_server.url, "--generator", chat_server.url, "--generator-model", "m"),
               "3 pipelines but 2 generators")
    error_line(cli("eval", "rag", "--data", data, "-p", "sparse", *common), "sparse")
    error_line(cli("eval", "rag", "--data", tmp_path / "nowhere", "-p", "bm25", *common), "not a BEIR directory")
    assert chat_server.requests == []


def test_none_gold_and_majority_systems_and_unlabelled_answers(cli, chat_server, tmp_path, caplog):
    data = beir_dir(tmp_path / "beir")
    replies = iter(["Yes [1]", "I cannot tell", "maybe so [1]", "No."] * 3)
    chat_server.reply = lambda body: next(replies)
    with caplog.at_level(logging.WARNING):
        code, out, err = cli("--json", "eval", "rag", "--data", data, "-p", "none", "-p", "gold", "--generator",
                             chat_server.url, "--generator-model", "m", "-k", "2")
    assert code == 0, err
    systems = {s["name"]: s for s in json.loads(out)["systems"]}
    assert list(systems) == ["majority (yes)", "none -> m", "gold -> m"]
    # gold yes/no/maybe/yes; answers yes, (none), maybe, no: 2 of 4 right, one unlabelled
    for name in ("none -> m", "gold -> m"):
        metrics = systems[name]["metrics"]
        assert metrics["accuracy"] == 0.5 and metrics["no_label"] == 0.25 and "recall@2" not in metrics
        assert systems[name]["predictions"] == {"q1": "yes", "q2": "", "q3": "maybe", "q4": "no"}
    assert "name none of the labels" in caplog.text
    majority = systems["majority (yes)"]["metrics"]
    assert majority["accuracy"] == 0.5 and majority["recall_yes"] == 1.0 and majority["recall_no"] == 0.0
    # `none` sends no passages; `gold` sends each question's own passage
    prompts = [r["body"]["messages"][-1]["content"] for r in chat_server.requests]
    assert "[1]" not in prompts[0].split("Context:")[1] and "Start your answer with Yes, No or Maybe" in prompts[0]
    assert "[1] (d1) Cardiac arrhythmia" in prompts[4]
    # gold -> m cites [1] = its gold passage in q1 and q3
    assert systems["gold -> m"]["metrics"]["cites_gold"] == 0.5


def test_rouge_l_against_a_long_answer_field(cli, chat_server, tmp_path):
    data = beir_dir(tmp_path / "beir", long_answer="potassium imbalance causes arrhythmia")
    chat_server.reply = lambda body: "Yes. potassium imbalance causes arrhythmia [1]"
    code, out, err = cli("--json", "eval", "rag", "--data", data, "-p", "bm25", "--generator", chat_server.url,
                         "--generator-model", "m", "--long-answer-field", "long_answer")
    assert code == 0, err
    metrics = json.loads(out)["systems"][1]["metrics"]
    assert 0.8 < metrics["rouge_l"] < 1.0  # the "Yes." is not in the reference
    error_line(cli("eval", "rag", "--data", data, "-p", "bm25", "--generator", chat_server.url, "--generator-model",
                   "m", "--long-answer-field", "summary"), "queries.jsonl:1:", "'summary'")
