"""Ingestion throughput per format: files, characters and chunks per second of `ragtune data chunk`'s reading and
splitting (no embedding), on SciFact abstracts written as Markdown, HTML, DOCX, PPTX, XLSX and PDF files.

Each file holds 10 abstracts, each under its own heading (a slide of its own in PPTX, a row in XLSX, a page in the
PDF). HTML is measured twice: through trafilatura (the default where it is installed) and through the stdlib parser
alone, side by side. Chunks are sized in all-MiniLM-L6-v2's tokens (256, overlap 32), as `index build` does. Reads
../shared/data/scifact (CC BY-NC; the files are written to a temporary folder and removed).
Run: python -m benchmarks.ingest_formats [--files 30]
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.rag_index import SCIFACT

PER_FILE = 10


def abstracts(n: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:n]]
    return [(r["title"], r["text"]) for r in rows]


def write_markdown(path: Path, docs):
    path.write_text("".join(f"# {t}\n\n{x}\n\n" for t, x in docs), encoding="utf-8")


def write_html(path: Path, docs):
    body = "".join(f"<section><h2>{html.escape(t)}</h2><p>{html.escape(x)}</p></section>" for t, x in docs)
    path.write_text(f"<html><head><title>Abstracts</title></head><body><nav><a href='/'>Home</a> <a href='/a'>All"
                    f"</a></nav><main><h1>Abstracts</h1>{body}</main><footer>Copyright 2026</footer></body></html>",
                    encoding="utf-8")


def write_docx(path: Path, docs):
    import docx

    document = docx.Document()
    for title, text in docs:
        document.add_heading(title, 1)
        document.add_paragraph(text)
    document.save(path)


def write_pptx(path: Path, docs):
    import pptx

    deck = pptx.Presentation()
    for title, text in docs:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = text
    deck.save(path)


def write_xlsx(path: Path, docs):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["title", "abstract"])
    for row in docs:
        book.active.append(list(row))
    book.save(path)


def write_pdf(path: Path, docs):
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for title, text in docs:
            figure = plt.figure(figsize=(8.5, 11))
            figure.text(0.08, 0.95, title[:90], fontsize=11, va="top")
            figure.text(0.08, 0.92, "\n".join(textwrap.wrap(text, 100)[:60]), fontsize=8, va="top")
            pdf.savefig(figure)
            plt.close(figure)


WRITERS = {"markdown": (".md", write_markdown), "html": (".html", write_html), "docx": (".docx", write_docx),
           "pptx": (".pptx", write_pptx), "xlsx": (".xlsx", write_xlsx), "pdf": (".pdf", write_pdf)}


def measure(folder: Path, chunker) -> dict:
    from ragtune.ingest.chunk import chunk_files
    from ragtune.ingest.documents import read_documents, source_files

    files = source_files([folder])
    start = time.perf_counter()
    characters = sum(len(d.text) for f in files for d in read_documents(f))
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    chunks, warnings = chunk_files([folder], chunker)
    seconds = time.perf_counter() - start
    assert not warnings, warnings
    return {"files": len(files), "characters": characters, "chunks": len(chunks), "read_s": round(read_s, 3),
            "seconds": round(seconds, 3), "files_per_s": round(len(files) / seconds, 1),
            "chunks_per_s": round(len(chunks) / seconds, 1), "kchars_per_s": round(characters / seconds / 1e3, 1),
            "with_heading_path": round(sum(bool(c.metadata.get("headings")) for c in chunks) / len(chunks), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=30, help="files per format")
    args = parser.parse_args()
    from ragtune.ingest.chunk import Chunker
    from ragtune.models.device import choose_placement
    from ragtune.models.load import load_embedder

    chunker = Chunker.for_embedder(load_embedder("sentence-transformers/all-MiniLM-L6-v2",
                                                 choose_placement("cpu", "fp32")), None, 32)
    docs = abstracts(args.files * PER_FILE)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (suffix, write) in WRITERS.items():
            folder = Path(tmp) / name
            folder.mkdir()
            for i in range(args.files):
                write(folder / f"doc{i:03d}{suffix}", docs[i * PER_FILE:(i + 1) * PER_FILE])
            rows[name] = measure(folder, chunker)
            if name == "html":
                sys.modules["trafilatura"] = None  # the stdlib parser alone, on the same files
                rows["html (stdlib parser)"] = measure(folder, chunker)
                del sys.modules["trafilatura"]
    print(f"{'format':<22}{'files':>6}{'chunks':>8}{'files/s':>9}{'chunks/s':>10}{'kchar/s':>9}{'headed':>8}")
    for name, row in rows.items():
        print(f"{name:<22}{row['files']:>6}{row['chunks']:>8}{row['files_per_s']:>9}{row['chunks_per_s']:>10}"
              f"{row['kchars_per_s']:>9}{row['with_heading_path']:>8}")
    ratio = rows["html (stdlib parser)"]["chunks_per_s"] / rows["html"]["chunks_per_s"]
    print(f"HTML: the stdlib parser is {ratio:.2f}x trafilatura's chunks/s")
    write_result("ingest_formats", {"files_per_format": args.files, "abstracts_per_file": PER_FILE,
                                    "chunk_size": chunker.chunk_size, "overlap": chunker.overlap, "formats": rows,
                                    "html_stdlib_over_trafilatura": round(ratio, 2)})


if __name__ == "__main__":
    main()
