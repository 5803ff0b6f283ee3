"""`ragtune index build|add|delete|info`: a persistent retrieval index over a folder of documents."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ragtune.cli.output import FLAGS, RichReporter, emit_json, say, show, table

app = typer.Typer(no_args_is_help=True, help="Build and update a persistent retrieval index (FAISS or pgvector + BM25 + "
                  "SQLite).")
EMBEDDER = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--embedder",
                        help="embedding model (hub id, path, or a ragtune run's final/); its tokenizer sizes chunks")
CHUNK_SIZE = typer.Option(None, "--chunk-size", min=8, help="tokens per chunk, at most what the embedder reads "
                          "(default: 256, or less where the embedder reads less)")
OVERLAP = typer.Option(32, "--overlap", min=0, help="tokens shared by consecutive chunks")
TEXT_FIELD = typer.Option("text", "--text-field", help="text field of .jsonl documents")
META = typer.Option(None, "--meta", help="KEY=VALUE added to every chunk's metadata (repeatable)")
PDF_LAYOUT = typer.Option(False, "--pdf-layout", help="read PDF pages as laid out (columns and table cells kept "
                          "in place) instead of in reading order")
DOCS_HELP = "files and folders (.txt .md .html .pdf .docx .pptx .xlsx .jsonl)"


class Backend(str, Enum):
    faiss = "faiss"
    pgvector = "pgvector"


class TokenDtype(str, Enum):
    int8 = "int8"
    fp16 = "fp16"


def metadata(meta: Optional[list[str]]) -> dict:
    from ragtune.config.load import apply_overrides

    return apply_overrides({}, meta or [])


def _render(report, what: str) -> int:
    from dataclasses import asdict

    if FLAGS.json:
        emit_json(asdict(report))
        return 0
    rows = [["sources added", len(report.added_sources)], ["sources changed", len(report.changed_sources)],
            ["sources unchanged", len(report.unchanged_sources)], ["sources removed", len(report.removed_sources)],
            ["chunks added", report.chunks_added], ["chunks removed", report.chunks_removed],
            ["segments merged", report.segments_merged],
            ["seconds", f"{report.seconds:.1f}"]]
    show(table(what, ["", "count"], [r for r in rows if r[1] not in (0, "0")]))
    for warning in report.warnings:
        say(f"[yellow]skipped:[/] {escape(warning)}")
    return 0


@app.command("build")
def build(docs: list[Path] = typer.Argument(..., help=DOCS_HELP),
          out: Path = typer.Option(..., "--out", "-o", help="index folder to create"),
          embedder: str = EMBEDDER,
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="retrieval settings (bm25, dense, "
                                                "fusion) for the index"),
          chunk_size: Optional[int] = CHUNK_SIZE, overlap: int = OVERLAP, text_field: str = TEXT_FIELD,
          meta: Optional[list[str]] = META, pdf_layout: bool = PDF_LAYOUT,
          multivector: Optional[str] = typer.Option(None, "--multivector", help="late-interaction model (a "
                                                    "`ragtune train multivector` run): store every chunk's token "
                                                    "vectors, for MaxSim as the second stage"),
          token_dtype: TokenDtype = typer.Option("int8", "--token-dtype", help="how token vectors are stored: int8 "
                                                 "(one scale per token) or fp16 (twice the bytes)"),
          clara: Optional[str] = typer.Option(None, "--clara", help="a `ragtune train clara` run: store every "
                                              "chunk's memory vectors, so that `query --generator RUN` compresses "
                                              "nothing at query time"),
          backend: Backend = typer.Option("faiss", "--backend", help="where the vectors live: faiss (files in the "
                                          "index folder) or pgvector (tables in PostgreSQL, at --uri)"),
          uri: Optional[str] = typer.Option(None, "--uri", help="PostgreSQL URI for --backend pgvector "
                                            "(postgresql://USER@HOST:PORT/DB; the password from PGPASSWORD or "
                                            "~/.pgpass, and never stored)"),
          overwrite: bool = typer.Option(False, "--overwrite", help="rebuild an existing index")) -> int:
    """Chunk, embed and index documents into a new index folder."""
    from ragtune.config import load_config
    from ragtune.index import build_index

    settings = load_config("retrieval", config)
    with RichReporter().phase("Building the index"):
        report = build_index(out, [str(d) for d in docs], embedder, settings, chunk_size, overlap, overwrite,
                             text_field=text_field, metadata=metadata(meta), multivector=multivector,
                             token_dtype=token_dtype.value, pdf_layout=pdf_layout, backend=backend.value, uri=uri,
                             clara=clara)
    return _render(report, f"index {out}")


@app.command("add")
def add(index: Path = typer.Argument(..., help="index folder"),
        docs: list[Path] = typer.Argument(..., help="new or changed files and folders"),
        embedder: Optional[str] = typer.Option(None, "--embedder", help="must be the index's own embedder"),
        meta: Optional[list[str]] = META) -> int:
    """Index new and changed documents (by content hash); unchanged ones are skipped."""
    from ragtune.index import add_to_index

    with RichReporter().phase("Updating the index"):
        report = add_to_index(index, [str(d) for d in docs], embedder, metadata=metadata(meta))
    return _render(report, f"index {index}")


@app.command("delete")
def delete(index: Path = typer.Argument(..., help="index folder"),
           source: Optional[list[str]] = typer.Option(None, "--source", help="a source path as indexed (repeatable)"),
           chunk_id: Optional[list[str]] = typer.Option(None, "--id", help="a chunk id (repeatable)")) -> int:
    """Remove documents (by source path) or single chunks (by id)."""
    from ragtune.errors import ConfigError
    from ragtune.index import delete_from_index

    if not source and not chunk_id:
        raise ConfigError("say what to delete: --source PATH or --id CHUNK_ID (repeatable)")
    report = delete_from_index(index, source, chunk_id)
    return _render(report, f"index {index}")


@app.command("compact")
def compact(index: Path = typer.Argument(..., help="index folder")) -> int:
    """Merge the index's segments into one and drop its deleted chunks for good (no model runs)."""
    from ragtune.index import compact_index

    with RichReporter().phase("Compacting the index"):
        report = compact_index(index)
    return _render(report, f"index {index}")


@app.command("info")
def info(index: Path = typer.Argument(..., help="index folder")) -> int:
    """Embedder, chunker settings, counts and size of an index."""
    from ragtune.index import Index

    details = Index(index).info()
    if FLAGS.json:
        emit_json(details)
        return 0
    show(table(f"index {index}", ["", "value"], [[k, escape(str(v))] for k, v in details.items()]))
    return 0
