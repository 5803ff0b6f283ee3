"""`ragtune query INDEX "question"`: retrieve -> rerank -> generate, with the sources."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ragtune.cli.output import FLAGS, emit_json, say, show, table
from ragtune.models.packaged_llm import DEFAULT_GENERATOR


def query(index: Path = typer.Argument(..., help="index folder built with `ragtune index build`"),
          question: str = typer.Argument(..., help="the question"),
          overrides: Optional[list[str]] = typer.Argument(None, help="settings, e.g. first_stage=dense min_score=0.2"),
          rerank: Optional[str] = typer.Option(None, "--rerank", help="second stage: a cross-encoder, or maxsim (the "
                                              "index's stored token vectors)"),
          generator: str = typer.Option(DEFAULT_GENERATOR, "--generator", help="local model (path, hub id, ragtune "
                                        "run) or an OpenAI-compatible base URL (http://host:8000/v1); default: the "
                                        "packaged SmolLM2-135M-Instruct"),
          generator_model: Optional[str] = typer.Option(None, "--generator-model", help="served model name, for a URL"),
          no_generate: bool = typer.Option(False, "--no-generate", help="retrieval only: print the ranked chunks"),
          k: Optional[int] = typer.Option(None, "-k", min=1, help="passages to use (default 5)"),
          server: Optional[str] = typer.Option(None, "--server", help="ask a running `ragtune serve` at this URL "
                                               "instead of loading models (INDEX is then ignored)"),
          api_key: Optional[str] = typer.Option(None, "--api-key", help="the server's key (default: "
                                                "$RAGTUNE_API_KEY)"),
          where: Optional[list[str]] = typer.Option(None, "--where", help="metadata filter, all must hold: "
                                                    "KEY=VALUE, KEY!=VALUE, KEY>=VALUE (>, <, <=), KEY=[A, B] "
                                                    "(repeatable), e.g. --where team=search --where year>=2024"),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="query settings (YAML/JSON)")) -> int:
    """Answer a question from an index, citing the chunks it used."""
    from ragtune.config import load_config
    from ragtune.rag.pipeline import RAGPipeline, check_question

    check_question(question)  # before any model loads
    settings = load_config("query", config, [*(overrides or []), *([f"k={k}"] if k else [])])
    if where:
        from ragtune.retrieval.filters import from_where

        given = from_where(where).to_dict()  # with a filter from the config too, both must hold
        settings = settings.model_copy(update={"filter": {"$and": [settings.filter, given]} if settings.filter
                                               else given})
    if server:
        from ragtune.serve.client import ask_server

        result = ask_server(server, question, settings, generate=not no_generate, api_key=api_key)
    else:
        pipeline = RAGPipeline.from_index(str(index), rerank, None if no_generate else generator, generator_model,
                                          settings)
        result = pipeline.answer(question, generate=not no_generate)
    if FLAGS.json:
        emit_json(result.to_dict())
        return 0
    if result.answer is not None:
        say(f"[bold]{escape(result.answer)}[/]\n")
    show(table("sources", ["#", "score", "source", "page", "chunk id", "text"],
               [[s.n, f"{s.score:.3f}", escape(s.source), s.page or "", s.id, escape(" ".join(s.text.split())[:160])]
                for s in result.sources]))
    return 0
