"""The FastAPI app of `ragtune serve`: OpenAI-compatible /v1/embeddings and /v1/chat/completions, /v1/rerank in
the Cohere/Jina/TEI shape, /v1/search, /health, /v1/models and /metrics.

Bodies are read and checked here (size, UTF-8, JSON, schema), so every bad request gets a 4xx JSON error in the
OpenAI shape, `{"error": {"message", "type", "param", "code"}}`, and never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from ragtune.errors import ConfigError
from ragtune.retrieval.filters import parse_filter
from ragtune.serve.batching import Batcher
from ragtune.serve.metrics import Metrics
from ragtune.serve.schemas import ChatRequest, EmbeddingsRequest, RerankRequest, SearchRequest

log = logging.getLogger(__name__)


def _check_filter(value: dict | None) -> None:
    """A bad metadata filter is the client's mistake (422), found before any model work."""
    try:
        parse_filter(value)
    except ConfigError as exc:
        raise HTTPProblem(422, str(exc), "filter") from None


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.status}}, status_code=self.status)


def _validation_message(exc: ValidationError) -> tuple[str, str | None]:
    problems, first = [], None
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        first = first or field
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown field '{field}'")
        else:
            problems.append(f"{field}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems), first


async def _body(request: Request, schema, max_bytes: int):
    raw = await request.body()
    if len(raw) > max_bytes:
        raise HTTPProblem(413, f"the body is {len(raw)} bytes; the limit is {max_bytes} (serve.max_body_bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPProblem(400, f"the body is not UTF-8 (byte {exc.start}); send UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise HTTPProblem(400, f"malformed JSON ({exc}); send a JSON object") from None
    if not isinstance(data, dict):
        raise HTTPProblem(422, f"the body must be a JSON object, not {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        message, field = _validation_message(exc)
        raise HTTPProblem(422, message, field) from None


def _check_texts(texts: list[str], field: str, limits) -> None:
    if not texts:
        raise HTTPProblem(422, f"{field} is empty; give at least one text", field)
    if len(texts) > limits.max_inputs:
        raise HTTPProblem(413, f"{field} has {len(texts)} texts; the limit is {limits.max_inputs} "
                          "(serve.max_inputs)", field)
    for i, text in enumerate(texts):
        if not text.strip():
            raise HTTPProblem(422, f"{field}[{i}] is empty", field)
        if len(text) > limits.max_input_chars:
            raise HTTPProblem(413, f"{field}[{i}] has {len(text)} characters; the limit is "
                              f"{limits.max_input_chars} (serve.max_input_chars)", field)


def build_app(state, api_key: str | None = None) -> FastAPI:
    """The app over a loaded ServeState; with `api_key`, every endpoint but /health needs `Bearer KEY`."""
    settings = state.settings
    app = FastAPI(title="ragtune", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics(state)
    app.state.ragtune = state
    embed_batcher = Batcher(lambda kind, texts: state.embed(kind, texts), settings.batch_window_ms,
                            settings.max_batch, state.executor, metrics.batch.labels("embed").observe)
    rerank_batcher = Batcher(lambda _, pairs: state.rerank_scores(pairs), settings.batch_window_ms,
                             settings.max_batch, state.executor, metrics.batch.labels("rerank").observe)
    generation = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragtune-generate")
    lookups = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragtune-lookup")  # one SQLite reader at a time

    @app.middleware("http")
    async def guard(request: Request, call_next):
        start, path = time.perf_counter(), request.url.path
        endpoint = path if path in ENDPOINTS else "other"
        try:
            if api_key and path != "/health" and request.headers.get("authorization") != f"Bearer {api_key}":
                raise HTTPProblem(401, "missing or wrong API key; send 'Authorization: Bearer KEY'",
                                  kind="authentication_error")
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
                raise HTTPProblem(413, f"the body is {declared} bytes; the limit is {settings.max_body_bytes} "
                                  "(serve.max_body_bytes)")
            response = await call_next(request)
        except HTTPProblem as problem:
            response = problem.response()
        except Exception as exc:  # noqa: BLE001 - a bug, not the client's fault: logged here, no traceback out
            log.exception("%s failed", path)
            response = HTTPProblem(500, f"the server failed on this request ({type(exc).__name__}); see its log",
                                   kind="server_error").response()
        metrics.record(endpoint, response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(HTTPProblem)
    async def problem_handler(_request: Request, problem: HTTPProblem):
        return problem.response()

    @app.get("/health")
    async def health():
        index = state.live.current()
        return {"status": "ok", "index": str(index.root), "version": index.folder.name,
                "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/v1/models")
    async def models():
        owned = [("embedder", state.embedder_name)]
        owned += [("reranker", state.reranker.name.removeprefix("rerank:"))] if state.reranker else []
        owned += [("generator", state.generator.name)] if state.generator else []
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "ragtune", "role": role,
                                            "created": int(state.started)} for role, name in owned]}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await _body(request, EmbeddingsRequest, settings.max_body_bytes)
        texts = [body.input] if isinstance(body.input, str) else body.input
        _check_texts(texts, "input", settings)
        kind = body.input_type or body.prompt_name or "document"
        vectors = await embed_batcher.run(kind, texts)
        if body.dimensions is not None and body.dimensions != len(vectors[0]):
            raise HTTPProblem(422, f"dimensions: this embedder gives {len(vectors[0])}-dimensional vectors",
                              "dimensions")
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(
            np.asarray(v, dtype=np.float32).tobytes()).decode("ascii") if body.encoding_format == "base64"
            else np.asarray(v, dtype=np.float32).tolist()} for i, v in enumerate(vectors)]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": state.embedder_name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/v1/rerank")
    async def rerank(request: Request):
        body = await _body(request, RerankRequest, settings.max_body_bytes)
        if state.reranker is None:
            raise HTTPProblem(404, "this server has no reranker; start it with --reranker MODEL")
        _check_texts([body.query], "query", settings)
        _check_texts(body.documents, "documents", settings)
        scores = await rerank_batcher.run("rerank", [(body.query, d) for d in body.documents])
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.top_n or len(scores)]
        results = [{"index": i, "relevance_score": scores[i],
                    **({"document": {"text": body.documents[i]}} if body.return_documents else {})} for i in order]
        return JSONResponse({"id": uuid.uuid4().hex, "model": state.reranker.name.removeprefix("rerank:"),
                             "results": results})

    def pipeline(first_stage: str | None = None, rerank: bool = True, dense=None, index=None, **changes):
        from ragtune.rag.pipeline import RAGPipeline

        query = settings.query.model_copy(update={k: v for k, v in
                                                  {"first_stage": first_stage, **changes}.items() if v is not None})
        index = index or state.live.current()
        reranker = state.reranker if rerank else None
        if reranker is not None and reranker.name.startswith("maxsim:"):  # this version's stored token vectors
            reranker = index.maxsim(reranker.model)
        return RAGPipeline(index, reranker, state.generator, query, dense)

    async def in_thread(executor, function, *args):
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    @app.post("/v1/search")
    async def search(request: Request):
        body = await _body(request, SearchRequest, settings.max_body_bytes)
        _check_texts([body.query], "query", settings)
        index = state.live.current()
        _check_filter(body.filter)
        first_stage = body.first_stage or settings.query.first_stage
        dense = None
        if first_stage != "bm25":  # the query's vector joins the batch of concurrent searches and embeddings
            start = time.perf_counter()
            vector = (await embed_batcher.run("query", [body.query]))[0]
            dense = Encoded(index.dense(), {body.query: vector}, 1000 * (time.perf_counter() - start))
        rerank = body.rerank and state.reranker is not None
        rag = pipeline(first_stage, rerank, dense, index, k=body.k, min_score=body.min_score)
        timings: dict[str, float] = {}
        # BM25, FAISS and SQLite need no model: without a reranker they run beside the model thread
        sources = await in_thread(state.executor if rerank else lookups, rag.retrieve, body.query, timings,
                                  body.filter)
        if dense is not None:
            timings["encode_ms"] = dense.encode_ms
        return JSONResponse({"query": body.query, "index_version": rag.index.folder.name, "timings_ms": timings,
                             "results": [source_json(s) for s in sources]})

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _body(request, ChatRequest, settings.max_body_bytes)
        if state.generator is None:
            raise HTTPProblem(404, "this server has no generator; start it with --generator MODEL|URL")
        question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
        _check_texts([question], "messages (the last user message)", settings)
        _check_filter(body.filter)
        from ragtune.rag.pipeline import messages_for

        rag = pipeline()
        sources = await in_thread(state.executor, rag.retrieve, question, None, body.filter)
        chat_messages, sources = messages_for(question, sources, state.generator, rag.settings)
        max_new = body.max_completion_tokens or body.max_tokens or rag.settings.max_new_tokens
        created, ident = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        cited = [source_json(s) for s in sources]
        if not body.stream:
            text = await in_thread(generation, state.generator.generate, chat_messages, max_new,
                                   body.temperature or 0.0)
            return {"id": ident, "object": "chat.completion", "created": created, "model": state.generator.name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()),
                              "total_tokens": len(text.split())}, "sources": cited}
        return StreamingResponse(stream_chat(chat_messages, max_new, ident, created, cited,
                                             bool(body.stream_options and body.stream_options.include_usage)),
                                 media_type="text/event-stream")

    async def stream_chat(chat_messages, max_new, ident, created, cited, include_usage):
        def event(delta: dict, finish: str | None = None, **extra) -> str:
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created,
                     "model": state.generator.name,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(chunk)}\n\n"

        yield event({"role": "assistant", "content": ""}, sources=cited)
        stream = getattr(state.generator, "stream", None)
        pieces = stream(chat_messages, max_new) if stream else iter([state.generator.generate(chat_messages, max_new)])
        words, done = 0, object()
        while True:
            piece = await in_thread(generation, next, pieces, done)
            if piece is done:
                break
            words += len(piece.split())
            yield event({"content": piece})
        yield event({}, "stop")
        if include_usage:
            usage = {"prompt_tokens": 0, "completion_tokens": words, "total_tokens": words}
            last = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": state.generator.name,
                    "choices": [], "usage": usage}
            yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"

    return app


ENDPOINTS = ("/health", "/v1/models", "/metrics", "/v1/embeddings", "/v1/rerank", "/v1/search",
             "/v1/chat/completions")


class Encoded:
    """The index's dense first stage with the query vectors already computed (in a batch with other requests)."""

    def __init__(self, dense, vectors: dict[str, np.ndarray], encode_ms: float):
        self.dense, self.vectors, self.encode_ms, self.name = dense, vectors, encode_ms, dense.name

    def search(self, queries: list[str], k: int, allowed=None):
        return self.dense.search_embeddings(np.stack([self.vectors[q] for q in queries]), k, allowed)


def source_json(source) -> dict:
    return {"n": source.n, "id": source.id, "score": source.score, "source": source.source, "title": source.title,
            "page": source.page, "text": source.text, "metadata": source.metadata}
