"""Office files as documents: DOCX through mammoth (to HTML, then the HTML reader, so headings, tables and lists
keep their structure), PPTX through python-pptx (one document per slide, its title as the heading), and XLSX
through openpyxl (one document per sheet, a row per line, cells separated by " | ").

markitdown wraps these same libraries. It is not used: its DOCX pre-processing strips the XML namespaces with
beautifulsoup4 4.15 and lxml 6, so every DOCX failed with "Could not find the body element".
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

from ragtune.errors import DataError

INSTALL = "pip install 'ragtune[ingest]'"


def _library(path: Path, module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{path}: reading {path.suffix.lower()} files needs {package}; run `{INSTALL}`") from None


def _unreadable(path: Path, kind: str, exc: Exception) -> DataError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{path}: not a readable {kind} file ({reason}); re-save it from its application")


def docx_html(path: Path) -> str:
    """The document's body as HTML, Word's heading styles as <h1>..<h6>."""
    mammoth = _library(path, "mammoth", "mammoth")
    try:
        with path.open("rb") as handle:
            return mammoth.convert_to_html(handle).value
    except Exception as exc:  # noqa: BLE001 - mammoth raises many unrelated types for a damaged file
        raise _unreadable(path, "DOCX", exc) from None


def docx_title(path: Path) -> str:
    """The title in the file's core properties, or ''."""
    import re

    try:
        with zipfile.ZipFile(path) as archive:
            core = archive.read("docProps/core.xml").decode("utf-8", "replace")
    except (zipfile.BadZipFile, KeyError, OSError):
        return ""
    match = re.search(r"<dc:title>([^<]*)</dc:title>", core)
    return match.group(1).strip() if match else ""


def _shape_lines(shape) -> Iterator[str]:
    if getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            yield " | ".join(cell.text.strip() for cell in row.cells)
    elif shape.has_text_frame:
        yield from (p.strip() for p in shape.text_frame.text.splitlines() if p.strip())
    for child in getattr(shape, "shapes", ()):  # a group's shapes
        yield from _shape_lines(child)


def pptx_slides(path: Path) -> Iterator[tuple[int, str]]:
    """(slide number, text) of every slide: '# title', then its text frames and tables, then its notes."""
    pptx = _library(path, "pptx", "python-pptx")
    try:
        deck = pptx.Presentation(str(path))
    except Exception as exc:  # noqa: BLE001 - python-pptx raises many unrelated types for a damaged file
        raise _unreadable(path, "PPTX", exc) from None
    for number, slide in enumerate(deck.slides, start=1):
        title = slide.shapes.title
        lines = [f"# {title.text.strip()}"] if title is not None and title.text.strip() else []
        for shape in slide.shapes:
            if title is None or shape.shape_id != title.shape_id:
                lines += _shape_lines(shape)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            lines += [f"Notes: {notes}"] if notes else []
        yield number, "\n\n".join(lines)


def _cell(value) -> str:
    return "" if value is None else str(value).strip()


def xlsx_sheets(path: Path) -> Iterator[tuple[str, str]]:
    """(sheet name, text) of every sheet: '# name', then one line per row that holds a value, its cells joined
    by ' | '."""
    openpyxl = _library(path, "openpyxl", "openpyxl")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)  # data_only: a formula's last value
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many unrelated types for a damaged file
        raise _unreadable(path, "XLSX", exc) from None
    try:
        for sheet in book.worksheets:
            lines = []
            for row in sheet.iter_rows(values_only=True):
                cells = [_cell(v) for v in row]
                while cells and not cells[-1]:  # a sheet's used range runs past the last filled column
                    cells.pop()
                lines += [" | ".join(cells)] if cells else []
            yield sheet.title, "\n".join([f"# {sheet.title}", ""] + lines) if lines else ""
    finally:
        book.close()
