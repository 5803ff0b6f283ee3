"""Ingestion of real document formats that the tests write: HTML (trafilatura and the stdlib fallback), DOCX, PPTX,
XLSX and PDF layout mode, every chunk's heading path, and the bad inputs of each (`ragtune.ingest`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ragtune.ingest.chunk import Chunker, heading_path, heading_starts, read_chunks
from ragtune.ingest.documents import read_documents
from tests.unit.test_bad_input import _write
from tests.unit.test_chunk import chunk_cli, text_pdf

PAGE = """<html><head><title>Install guide</title></head><body>
<nav><a href="/">Home</a> | <a href="/docs">Docs</a> | <a href="/blog">Blog</a></nav>
<main><article>
<h1>Install</h1>
<p>ragtune installs with pip on every platform that PyTorch supports, from a laptop to a cluster node.</p>
<h2>Linux</h2>
<p>On Linux, create a virtual environment first, then install the CPU wheel of torch before ragtune itself.</p>
<table><tr><th>name</th><th>size</th></tr><tr><td>alpha</td><td>beta</td></tr></table>
<dl><dt>term</dt><dd>definition</dd><dd>another</dd><dt>second</dt><dd>more</dd></dl>
<p>Write &amp;lt;b&amp;gt; for bold, and 5 &lt; 6 stays as written.</p>
<h3>Debian</h3>
<p>Debian needs the python3-venv package before the virtual environment can be created.</p>
<h2>macOS</h2>
<p>On macOS the same commands work in the default shell, with the arm64 wheel of torch.</p>
</article></main>
<aside><h3>Related posts</h3><p>Ten tips for faster search</p></aside>
<footer>Copyright 2026 ragtune. All rights reserved.</footer>
</body></html>"""


def _chunks(path: Path, chunk_size: int = 12, **chunker):
    return [c for d in read_documents(path, **chunker) for c in Chunker(chunk_size, 0).chunks(d)]


def _by_heading(chunks) -> dict[str, list[str]]:
    """The first words of each chunk's body (its heading line dropped) -> its heading path."""
    out = {}
    for chunk in chunks:
        body = [line for line in chunk.text.splitlines() if line.strip() and not line.startswith("#")]
        if body:
            out[" ".join(body[0].split()[:2])] = chunk.metadata.get("headings")
    return out


# ------------------------------------------------------------------------------------------------ heading paths
def test_heading_paths_close_at_their_level_and_skip_code_fences():
    text = ("# A\n\ntext a\n\n## B\n\ntext b\n\n```\n# not a heading\n```\n\n### C\n\ntext c\n\n## D\n\ntext d\n\n"
            "# E ##\n\ntext e")
    headings = heading_starts(text)
    assert [(level, name) for _, level, name in headings] == [(1, "A"), (2, "B"), (3, "C"), (2, "D"), (1, "E")]
    at = {word: heading_path(headings, text.index(word)) for word in ("text a", "text b", "not a", "text c",
                                                                        "text d", "text e")}
    assert at == {"text a": ["A"], "text b": ["A", "B"], "not a": ["A", "B"], "text c": ["A", "B", "C"],
                  "text d": ["A", "D"], "text e": ["E"]}
    assert heading_path(headings, 0) == ["A"] and heading_path([], 10) == []


def test_markdown_chunks_record_their_heading_path_and_plain_text_has_none(tmp_path):
    guide = _write(tmp_path / "guide.md", "# Install\n\nPip works everywhere.\n\n## Linux\n\nUse a virtual "
                   "environment.\n\n### Debian\n\nInstall python3-venv first.\n\n## macOS\n\nUse the arm64 wheel.\n")
    assert _by_heading(_chunks(guide, 8)) == {"Pip works": ["Install"], "Use a": ["Install", "Linux"],
                                              "Install python3-venv": ["Install", "Linux", "Debian"],
                                              "Use the": ["Install", "macOS"]}
    notes = _write(tmp_path / "notes.txt", "no headings here\n\nat all")
    assert all("headings" not in c.metadata for c in _chunks(notes))


# ------------------------------------------------------------------------------------------------------- HTML
def _html_checks(text: str) -> None:
    assert "Home" not in text and "Copyright" not in text  # navigation and footer are boilerplate
    assert "alpha | beta" in text and "name | size" in text and "alphabeta" not in text
    assert "term: definition; another" in text and "second: more" in text and "termdefinition" not in text
    assert "&lt;b&gt;" in text and "5 < 6" in text  # entities decoded once, no markdown escapes


def test_html_keeps_the_main_content_tables_definitions_and_headings(tmp_path):
    pytest.importorskip("trafilatura")
    page = _write(tmp_path / "page.html", PAGE)
    [document] = read_documents(page)
    _html_checks(document.text)
    assert "Related posts" not in document.text  # trafilatura drops the side bar
    assert document.title == "Install guide"
    paths = _by_heading(_chunks(page))
    assert paths["ragtune installs"] == ["Install"] and paths["Debian needs"] == ["Install", "Linux", "Debian"]
    assert paths["On macOS"] == ["Install", "macOS"]


def test_html_without_trafilatura_uses_the_stdlib_parser(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trafilatura", None)  # import trafilatura now raises ImportError
    page = _write(tmp_path / "page.html", PAGE)
    [document] = read_documents(page)
    _html_checks(document.text)
    assert document.title == "Install guide"
    assert _by_heading(_chunks(page))["Debian needs"] == ["Install", "Linux", "Debian"]


def test_a_tiny_page_keeps_its_headings(tmp_path):
    """trafilatura drops the headings of very short pages; the stdlib text, which has them, is used then."""
    page = _write(tmp_path / "tiny.html", "<html><body><h1>Glossary</h1><h2>BM25</h2><p>A ranking function."
                                          "</p><footer>foot</footer></body></html>")
    [document] = read_documents(page)
    assert document.text.startswith("# Glossary") and "## BM25" in document.text and "foot" not in document.text


# ------------------------------------------------------------------------------------------------ office files
def write_docx(path: Path) -> Path:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.core_properties.title = "Install handbook"
    document.add_heading("Install", 1)
    document.add_paragraph("ragtune installs with pip on every platform.")
    document.add_heading("Linux", 2)
    document.add_paragraph("Create a virtual environment first.")
    table = document.add_table(rows=2, cols=2)
    for (row, col), text in {(0, 0): "name", (0, 1): "size", (1, 0): "alpha", (1, 1): "beta"}.items():
        table.cell(row, col).text = text
    document.add_heading("Windows", 2)
    document.add_paragraph("Use PowerShell for the same commands.")
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(path)
    return path


def write_pptx(path: Path) -> Path:
    pptx = pytest.importorskip("pptx")
    from pptx.util import Inches

    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Roadmap"
    first.placeholders[1].text = "Ship metadata filters\nShip append-only segments"
    first.notes_slide.notes_text_frame.text = "Filters come first."
    second = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    second.shapes.title.text = "Owners"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for (row, col), text in {(0, 0): "team", (0, 1): "area", (1, 0): "search", (1, 1): "filters"}.items():
        table.cell(row, col).text = text
    path.parent.mkdir(parents=True, exist_ok=True)
    deck.save(path)
    return path


def write_xlsx(path: Path) -> Path:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    prices = book.active
    prices.title = "Prices"
    for row in (["item", "price", None], ["gpu", 100, None], [None, None, None], ["cpu", 20.5, None]):
        prices.append(row)
    book.create_sheet("Empty")
    book.create_sheet("Teams").append(["search", "filters"])
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def test_docx_keeps_headings_tables_and_its_title(tmp_path):
    pytest.importorskip("mammoth")
    path = write_docx(tmp_path / "handbook.docx")
    [document] = read_documents(path)
    assert document.title == "Install handbook"
    assert document.text.startswith("# Install") and "## Linux" in document.text
    assert "name | size" in document.text and "alpha | beta" in document.text
    paths = _by_heading(_chunks(path))
    assert paths["ragtune installs"] == ["Install"] and paths["Create a"] == ["Install", "Linux"]
    assert paths["Use PowerShell"] == ["Install", "Windows"]


def test_pptx_gives_one_document_per_slide_with_its_title_table_and_notes(tmp_path):
    path = write_pptx(tmp_path / "plan.pptx")
    first, second = read_documents(path)
    assert (first.page, second.page) == (1, 2) and first.title == "plan"
    assert first.text.startswith("# Roadmap") and "Ship metadata filters" in first.text
    assert "Notes: Filters come first." in first.text
    assert second.text.startswith("# Owners") and "team | area" in second.text and "search | filters" in second.text
    chunks = _chunks(path, 64)
    assert [(c.page, c.metadata["headings"]) for c in chunks] == [(1, ["Roadmap"]), (2, ["Owners"])]


def test_xlsx_gives_one_document_per_sheet_row_by_row(tmp_path):
    path = write_xlsx(tmp_path / "book.xlsx")
    documents = list(read_documents(path))
    assert [d.metadata["sheet"] for d in documents] == ["Prices", "Empty", "Teams"]
    prices, empty, teams = documents
    assert prices.text == "# Prices\n\nitem | price\ngpu | 100\ncpu | 20.5"  # empty rows and columns dropped
    assert empty.text == "" and teams.text == "# Teams\n\nsearch | filters"
    chunks = _chunks(path, 64)
    assert {c.metadata["sheet"] for c in chunks} == {"Prices", "Teams"}  # an empty sheet gives no chunk
    assert all(c.metadata["headings"] == [c.metadata["sheet"]] for c in chunks)


def test_pdf_layout_mode_keeps_columns_apart(tmp_path):
    path = _write(tmp_path / "two.pdf", text_pdf([[(72, 720, "Left top"), (320, 720, "Right top"),
                                                   (72, 700, "Left next"), (320, 700, "Right next")]]))
    [plain] = read_documents(path)
    [layout] = read_documents(path, pdf_layout=True)
    assert plain.text.splitlines()[0] == "Left top Right top"
    first = layout.text.splitlines()[0]
    assert first.startswith("Left top ") and first.endswith("Right top") and "     " in first


def test_every_format_through_the_cli_and_the_index_remembers_pdf_layout(cli, tiny_embedder, tmp_path):
    pytest.importorskip("mammoth")
    folder = tmp_path / "docs"
    write_docx(folder / "handbook.docx")
    write_pptx(folder / "plan.pptx")
    write_xlsx(folder / "book.xlsx")
    _write(folder / "page.html", PAGE)
    _write(folder / "two.pdf", text_pdf([[(72, 720, "Left top"), (320, 720, "Right top")]]))
    out = tmp_path / "chunks.jsonl"
    code, stdout, err = chunk_cli(cli, tiny_embedder, out, folder, "--pdf-layout")
    assert code == 0, err
    assert json.loads(stdout)["sources"] == 5
    chunks = read_chunks(out)
    by_source = {Path(c.source).name: c for c in chunks}
    assert set(by_source) == {"handbook.docx", "plan.pptx", "book.xlsx", "page.html", "two.pdf"}
    assert "     " in by_source["two.pdf"].text
    assert any(c.metadata.get("headings") == ["Install", "Linux", "Debian"] for c in chunks)

    index = tmp_path / "index"
    code, _, err = cli("index", "build", folder, "--out", index, "--embedder", tiny_embedder, "--pdf-layout")
    assert code == 0, err
    manifest = json.loads((index / (index / "CURRENT").read_text().strip() / "manifest.json").read_text())
    assert manifest["chunker"]["pdf_layout"] is True  # `index add` chunks new PDFs the same way


# ------------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("name,kind", [("bad.docx", "DOCX"), ("bad.pptx", "PPTX"), ("bad.xlsx", "XLSX")])
def test_a_damaged_office_file_is_one_clear_error(tmp_path, name, kind):
    pytest.importorskip("mammoth")
    path = _write(tmp_path / name, b"PK\x03\x04 not really a zip archive")
    with pytest.raises(Exception) as caught:
        list(read_documents(path))
    assert type(caught.value).__name__ == "DataError"
    assert str(caught.value).startswith(f"{path}: not a readable {kind} file") and "re-save it" in str(caught.value)


def test_a_missing_reader_library_names_the_extra(tmp_path, monkeypatch):
    path = write_docx(tmp_path / "handbook.docx")
    monkeypatch.setitem(sys.modules, "mammoth", None)
    with pytest.raises(Exception) as caught:
        list(read_documents(path))
    assert str(caught.value) == (f"{path}: reading .docx files needs mammoth; run `pip install 'ragtune[ingest]'`")


def test_damaged_files_in_a_folder_are_skipped_with_a_warning(cli, tiny_embedder, tmp_path):
    folder = tmp_path / "docs"
    _write(folder / "ok.md", "# Fine\n\nbone density")
    _write(folder / "bad.docx", b"not a zip")
    _write(folder / "bad.pptx", b"")
    _write(folder / "bad.xlsx", "a,b\n1,2\n")  # a CSV renamed
    code, stdout, err = chunk_cli(cli, tiny_embedder, tmp_path / "c.jsonl", folder)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["sources"] == 1 and len(report["skipped"]) == 3
    assert all("not a readable" in w and w.endswith("skipped") for w in report["skipped"])
