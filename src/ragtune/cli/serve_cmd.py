"""`ragtune serve INDEX`: the index and its models behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ragtune.cli.output import FLAGS, emit_json, say


def serve(index: Path = typer.Argument(..., help="index folder built with `ragtune index build`"),
          overrides: Optional[list[str]] = typer.Argument(None, help="settings, e.g. max_batch=32 query.k=3"),
          embedder: Optional[str] = typer.Option(None, "--embedder", help="the index's embedder from elsewhere (the "
                                                 "same weights); default: the one it was built with"),
          reranker: Optional[str] = typer.Option(None, "--reranker", help="cross-encoder for /v1/rerank and search, or "
                                                "maxsim (the index's stored token vectors)"),
          generator: Optional[str] = typer.Option(None, "--generator", help="local model (path, hub id, ragtune "
                                                  "run) or an OpenAI-compatible base URL, for /v1/chat/completions"),
          generator_model: Optional[str] = typer.Option(None, "--generator-model", help="served model name, for a "
                                                        "URL"),
          host: Optional[str] = typer.Option(None, "--host", help="address to bind (default 127.0.0.1)"),
          port: Optional[int] = typer.Option(None, "--port", help="port (default 8000; 0: a free one)"),
          api_key: Optional[str] = typer.Option(None, "--api-key", help="require 'Authorization: Bearer KEY' "
                                                "(default: $RAGTUNE_API_KEY)"),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="serve settings (YAML/JSON)")) -> int:
    """Serve /v1/embeddings, /v1/rerank, /v1/search, /v1/chat/completions, /health, /v1/models and /metrics."""
    from ragtune.config import load_config

    extra = [f"host={host}"] if host else []
    extra += [f"port={port}"] if port is not None else []
    settings = load_config("serve", config, [*(overrides or []), *extra])
    from ragtune.serve.runner import bind, server, url_of

    sock = bind(settings.host, settings.port)  # a taken port fails before any model loads
    from ragtune.serve.app import build_app
    from ragtune.serve.state import ServeState

    state = ServeState(index, settings, reranker, generator, generator_model, embedder)
    key = api_key or os.environ.get("RAGTUNE_API_KEY") or None
    url = url_of(sock)
    if FLAGS.json:
        emit_json({"url": url, "index": str(index), "auth": bool(key)})
    say(f"serving {index} on {url} (OpenAI base URL {url}/v1){'; API key required' if key else ''}")
    server(build_app(state, key), sock).run(sockets=[sock])
    return 0
