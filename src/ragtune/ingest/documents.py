"""Documents from files: .txt, .md, .html, .pdf, .docx, .pptx, .xlsx and .jsonl read as text, and every such file
found under folders. Structure is kept as markdown headings ('# Title'), which the chunker turns into heading paths.

Unreadable files (encrypted or corrupt PDFs, binaries, bad UTF-8) raise a DataError naming them, which the chunker
turns into a warning and a skipped file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ragtune.errors import DataError, missing_path
from ragtune.ingest.html import full_text, html_text
from ragtune.utils import decode_utf8

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".pptx", ".xlsx", ".jsonl")


@dataclass
class Document:
    """One unit of a source file: a whole text file, a PDF page, a slide, a sheet, or a JSONL record."""

    text: str
    source: str
    title: str = ""
    page: int | None = None
    metadata: dict = field(default_factory=dict)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path}: a binary file, not text")
    return decode_utf8(raw, lambda line: f"{path}:{line}")


def _markdown_title(text: str, fallback: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else fallback


def _pdf(path: Path, layout: bool = False) -> Iterator[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    pypdf_log = logging.getLogger("pypdf")
    level = pypdf_log.level
    pypdf_log.setLevel(logging.ERROR)  # its repair notes on a damaged file; ragtune's own line says what matters
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise DataError(f"{path}: an encrypted PDF; decrypt it first")
        title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or path.stem
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text(extraction_mode="layout") if layout else page.extract_text()
            yield Document(text or "", str(path), title, number)
    except DataError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not a readable PDF ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    finally:
        pypdf_log.setLevel(level)


def _jsonl(path: Path, text_field: str) -> Iterator[Document]:
    from ragtune.ingest.readers import read_rows

    for row in read_rows(path):
        text = row.string(text_field, row.data.get(text_field), "it holds the document text; set --text-field to "
                          "your text column")
        meta = {k: v for k, v in row.data.items() if k != text_field}
        meta.setdefault("record", row.line if row.line is not None else row.index + 1)  # one document per record
        title = str(meta.get("title") or path.stem)
        yield Document(text, str(path), title, None, meta)


def _office(path: Path) -> Iterator[Document]:
    from ragtune.ingest import office

    suffix = path.suffix.lower()
    if suffix == ".docx":
        text, _ = full_text(office.docx_html(path))
        yield Document(text, str(path), office.docx_title(path) or _markdown_title(text, path.stem))
    elif suffix == ".pptx":
        for number, text in office.pptx_slides(path):
            yield Document(text, str(path), path.stem, number)
    else:
        for sheet, text in office.xlsx_sheets(path):
            yield Document(text, str(path), path.stem, None, {"sheet": sheet})


def read_documents(path: Path, text_field: str = "text", pdf_layout: bool = False) -> Iterator[Document]:
    """The documents inside one file; DataError when it cannot be read. `pdf_layout` keeps a PDF page's layout
    (columns and table cells placed by their position on the page) instead of its reading-order text."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        yield from _pdf(path, pdf_layout)
    elif suffix == ".jsonl":
        yield from _jsonl(path, text_field)
    elif suffix in (".docx", ".pptx", ".xlsx"):
        yield from _office(path)
    elif suffix in (".html", ".htm"):
        text, title = html_text(_read_text(path))
        yield Document(text, str(path), title or path.stem)
    else:
        text = _read_text(path)
        yield Document(text, str(path), _markdown_title(text, path.stem) if suffix != ".txt" else path.stem)


def source_files(inputs: list[str | Path]) -> list[Path]:
    """Every supported file under the given files and folders, sorted; unsupported files are reported."""
    files: list[Path] = []
    skipped: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise missing_path(path)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()  # nothing hidden: .git/, .venv/, .cache
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            skipped += [p for p in found if p.suffix.lower() not in SUFFIXES]
            files += [p for p in found if p.suffix.lower() in SUFFIXES]
        elif path.suffix.lower() in SUFFIXES:
            files.append(path)
        else:
            raise DataError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(SUFFIXES)}")
    if not files:
        raise DataError(f"{', '.join(map(str, inputs))}: no {', '.join(SUFFIXES)} files to ingest"
                        + (f" ({len(skipped)} of other types, first: {skipped[0].name})" if skipped else ""))
    for path in skipped:
        log.warning("%s: skipped (not one of %s)", path, ", ".join(SUFFIXES))
    return list(dict.fromkeys(files))  # a file named twice (itself and its folder) is read once
