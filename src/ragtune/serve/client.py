"""`ragtune query --server URL`: the question asked of a running server (standard library HTTP only)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from ragtune.config.rag import RAGSection
from ragtune.errors import GeneratorError
from ragtune.rag.pipeline import Answer, Source


def _post(url: str, body: dict, api_key: str | None, timeout: float = 300) -> dict:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, json.dumps(body).encode("utf-8"), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read().decode("utf-8"))["error"]["message"]
        except (ValueError, KeyError, TypeError):
            problem = exc.reason
        raise GeneratorError(f"--server {url}: HTTP {exc.code}: {problem}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise GeneratorError(f"--server {url}: no answer ({getattr(exc, 'reason', exc)}); is `ragtune serve` "
                             "running there?") from None


def ask_server(server: str, question: str, settings: RAGSection, generate: bool = True,
               api_key: str | None = None) -> Answer:
    """The server's answer (or, without `generate`, its ranked chunks) as the local pipeline returns it."""
    base = server.rstrip("/").removesuffix("/v1")
    key = api_key or os.environ.get("RAGTUNE_API_KEY")
    start = time.perf_counter()
    if generate:
        reply = _post(f"{base}/v1/chat/completions", {"messages": [{"role": "user", "content": question}],
                                                      "max_tokens": settings.max_new_tokens,
                                                      "filter": settings.filter}, key)
        text, found = reply["choices"][0]["message"]["content"], reply.get("sources", [])
    else:
        reply = _post(f"{base}/v1/search", {"query": question, "k": settings.k,
                                            "first_stage": settings.first_stage, "min_score": settings.min_score,
                                            "filter": settings.filter},
                      key)
        text, found = None, reply["results"]
    sources = [Source(s["n"], s["id"], s["source"], s["title"], s["page"], s["score"], s["text"], s["metadata"])
               for s in found]
    return Answer(question, text, sources, {"server_ms": 1000 * (time.perf_counter() - start)})
