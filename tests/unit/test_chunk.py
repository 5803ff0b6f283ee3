"""Document ingestion and chunking: every file type, token budgets, overlap, offsets, structure, metadata, stable
ids, and the bad inputs (`ragtune.ingest` and `ragtune.data.chunk`)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ragtune.errors import DataError
from ragtune.ingest.chunk import Chunker, chunk_files, read_chunks
from ragtune.ingest.documents import read_documents
from tests.unit.test_bad_input import _write, one_line_error

WORDS = ("heart blood pressure artery plaque cholesterol levels asthma attack lung capacity smoking damage oxygen "
         "saturation chronic cough memory loss stroke recovery migraine pain sleep quality bone density fracture "
         "healing joint pain calcium intake spine posture skin rash sun exposure wound healing").split()


def text_pdf(pages: list, title: str | None = None) -> bytes:
    """A minimal valid PDF with one text line per entry of `pages` (Helvetica), written by hand; a page given as
    [(x, y, text), ...] places each text there."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(len(pages)))}] "
               f"/Count {len(pages)} >>".encode(),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, text in enumerate(pages):
        runs = [(72, 720, text)] if isinstance(text, str) else text
        stream = " ".join(f"BT /F1 12 Tf {x} {y} Td ({t}) Tj ET" for x, y, t in runs).encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> "
                       f">> /Contents {5 + 2 * i} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    if title:
        objects.append(f"<< /Title ({title}) >>".encode())
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1) + b"".join(b"%010d 00000 n \n" % o
                                                                               for o in offsets)
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def blank_pdf(path: Path, password: str | None = None) -> Path:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    if password:
        writer.encrypt(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def prose(n_words: int, seed: int = 0) -> str:
    """Run-on text of vocabulary words (one token each for the tiny embedder), with no punctuation."""
    return " ".join(WORDS[(seed + 7 * i) % len(WORDS)] for i in range(n_words))


@pytest.fixture
def tokenizer(tiny_embedder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_embedder)


@pytest.fixture
def docs(tmp_path) -> Path:
    """One file of every supported type."""
    folder = tmp_path / "docs"
    _write(folder / "notes.txt", "Cholesterol levels rise with age.\n\nHeart rhythm can be irregular.\n")
    _write(folder / "guide.md", "# Lung guide\n\nAsthma attack and chronic cough.\n\n## Smoking\n\nSmoking damage.\n")
    _write(folder / "page.html", "<html><head><title>Brain page</title><style>p {color: red}</style></head><body>"
                                 "<h1>Brain</h1><p>Memory loss &amp; stroke recovery.</p><script>var hidden = 1;"
                                 "</script><p>Migraine pain.</p></body></html>")
    _write(folder / "paper.pdf", text_pdf(["Bone density and calcium intake", "Fracture healing and joint pain"],
                                          title="Bone paper"))
    _write(folder / "records.jsonl", json.dumps({"text": "gut bacteria and stomach ulcer", "title": "Gut",
                                                 "year": 2020}) + "\n" +
           json.dumps({"text": "skin rash after sun exposure", "lang": "en"}) + "\n")
    return folder


def error_line(result, *needles) -> str:
    """Exit 2, no traceback, exactly one `error:` line on stderr holding every needle (warnings logged before it
    are allowed); return that line."""
    code, out, err = result
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def chunk_cli(cli, tiny_embedder, out, *args):
    return cli("--json", "data", "chunk", *args, "--out", out, "--embedder", tiny_embedder)


# --------------------------------------------------------------------------------------------------- file types
def test_every_file_type_is_chunked_with_its_metadata(cli, docs, tiny_embedder, tmp_path):
    out = tmp_path / "chunks.jsonl"
    code, stdout, err = chunk_cli(cli, tiny_embedder, out, docs, "--meta", "team=cardio", "--meta", "year=1999")
    assert code == 0, err
    report = json.loads(stdout)
    chunks = read_chunks(out)
    assert report["chunks"] == len(chunks) and report["sources"] == 5 and report["skipped"] == []
    by_source = {}
    for chunk in chunks:
        by_source.setdefault(Path(chunk.source).name, []).append(chunk)
    assert sorted(by_source) == ["guide.md", "notes.txt", "page.html", "paper.pdf", "records.jsonl"]
    assert all(c.source == str(docs / name) for name, cs in by_source.items() for c in cs)
    titles = {name: {c.title for c in cs} for name, cs in by_source.items()}
    assert titles == {"guide.md": {"Lung guide"}, "notes.txt": {"notes"}, "page.html": {"Brain page"},
                      "paper.pdf": {"Bone paper"}, "records.jsonl": {"Gut", "records"}}
    for cs in by_source.values():  # chunk numbers count up from 0 within a source
        assert [c.chunk for c in cs] == list(range(len(cs)))
    pdf = by_source["paper.pdf"]
    assert [(c.page, c.text) for c in pdf] == [(1, "Bone density and calcium intake"),
                                               (2, "Fracture healing and joint pain")]
    assert all(c.page is None for name, cs in by_source.items() if name != "paper.pdf" for c in cs)
    html = " ".join(c.text for c in by_source["page.html"])
    assert "Memory loss & stroke recovery." in html and "Migraine pain." in html
    assert "hidden" not in html and "color" not in html and "Brain page" not in html
    assert html.startswith("# Brain")  # the <h1> became a heading for the splitter
    # --meta on every chunk; a record's own fields win over --meta; the text field is not repeated
    records = by_source["records.jsonl"]
    assert [c.metadata for c in records] == [{"team": "cardio", "year": 2020, "title": "Gut", "record": 1},
                                             {"team": "cardio", "year": 1999, "lang": "en", "record": 2}]
    assert all(c.metadata["team"] == "cardio" and c.metadata["year"] == 1999
               for name, cs in by_source.items() if name != "records.jsonl" for c in cs)
    assert len({c.id for c in chunks}) == len(chunks)


def test_text_field_option_and_human_output(cli, tiny_embedder, tmp_path):
    data = _write(tmp_path / "d.jsonl", '{"body": "bone density matters", "id": "b1"}\n')
    out = tmp_path / "c.jsonl"
    code, stdout, err = cli("data", "chunk", data, "--out", out, "--embedder", tiny_embedder, "--text-field", "body")
    assert code == 0, err
    assert "wrote 1 chunks from 1 documents" in stdout
    [chunk] = read_chunks(out)
    assert chunk.text == "bone density matters" and chunk.metadata == {"id": "b1", "record": 1}


def test_folders_skip_hidden_files_and_folders_and_entities_decode_once(tmp_path):
    from ragtune.ingest.documents import source_files

    folder = tmp_path / "docs"
    visible = _write(folder / "sub" / "visible.txt", "bone density")
    _write(folder / ".git" / "notes.txt", "not a document")
    _write(folder / ".venv" / "lib" / "README.md", "not a document either")
    _write(folder / ".hidden.md", "hidden")
    assert source_files([folder]) == [visible]
    assert source_files([folder / ".hidden.md"]) == [folder / ".hidden.md"]  # named on purpose: read
    page = _write(folder / "code.html", "<p>Write &amp;lt;b&amp;gt; for bold &amp; &eacute;t&eacute;</p>")
    [document] = read_documents(page)
    assert document.text == "Write &lt;b&gt; for bold & été"


def test_html_keeps_cells_and_definitions_apart_and_drops_navigation(tmp_path):
    page = _write(tmp_path / "page.html", (
        "<html><head><title>Guide</title></head><body><nav><a href='/'>Home</a> <a href='/x'>Products</a></nav>"
        "<main><h1>Install</h1><p>Read the table.</p><table><tr><th>name</th><th>size</th></tr>"
        "<tr><td>alpha</td><td>beta</td></tr></table><dl><dt>term</dt><dd>definition</dd><dd>another</dd>"
        "<dt>second</dt><dd>more</dd></dl></main><aside><h3>Related posts</h3><table><tr><td>x</td><td>y</td></tr>"
        "</table></aside><footer><h2>Contact</h2>Copyright 2026</footer>"
        "</body></html>"))
    [document] = read_documents(page)
    text = document.text
    assert "alpha | beta" in text and "name | size" in text and "alphabeta" not in text
    assert "term: definition; another" in text and "second: more" in text and "termdefinition" not in text
    for boilerplate in ("Home", "Products", "Related posts", "Copyright", "Contact", "x | y"):
        assert boilerplate not in text
    assert all(line.strip("#").strip() for line in text.splitlines() if line.startswith("#"))  # no empty heading
    assert text.startswith("# Install") and document.title == "Guide"


# ------------------------------------------------------------------------------------------ sizes and offsets
@pytest.mark.parametrize("chunk_size,overlap", [(16, 4), (24, 0), (40, 8)])
def test_chunks_fit_the_budget_overlap_and_point_into_the_text(tokenizer, chunk_size, overlap):
    chunker = Chunker(chunk_size, overlap, tokenizer)
    text = (f"# Heart\n\n{prose(30)}. {prose(12, 1)}.\n\n{prose(9, 2)}\n{prose(50, 3)}\n\n## Lungs\n\n"
            f"{prose(5, 4)}. Supercalifragilisticexpialidociouslyextraordinaryword {prose(20, 5)}.")
    from ragtune.ingest.documents import Document

    document = Document(text, "doc.md", "Heart")
    chunks = chunker.chunks(document)
    assert len(chunks) > 3
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip() and chunk.text
        size = chunker.size(chunk.text)
        assert size <= chunk_size or len(chunk.text.split()) == 1, (size, chunk.text)
    long_word = [c for c in chunks if chunker.size(c.text) > chunk_size]
    assert [c.text for c in long_word] in ([], ["Supercalifragilisticexpialidociouslyextraordinaryword"])
    # every character of the document (but whitespace) is in some chunk, in order
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered or text[i].isspace() for i in range(len(text)))
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    assert [c.chunk for c in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_share_about_overlap_tokens(tokenizer):
    from ragtune.ingest.documents import Document

    text = prose(200)  # no sentence or paragraph breaks: the splitter goes down to words
    chunker = Chunker(20, 5, tokenizer)
    chunks = chunker.chunks(Document(text, "run-on.txt"))
    assert len(chunks) >= 10
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "no overlap"
        shared = text[after.start:before.end]
        assert 1 <= chunker.size(shared) <= 5
        assert before.text.endswith(shared) and after.text.startswith(shared)
    no_overlap = Chunker(20, 0, tokenizer).chunks(Document(text, "run-on.txt"))
    assert all(b.start >= a.end for a, b in itertools.pairwise(no_overlap))
    assert len(no_overlap) < len(chunks)


def test_word_counting_without_a_tokenizer():
    from ragtune.ingest.documents import Document

    chunks = Chunker(10, 2).chunks(Document(prose(45), "w.txt"))
    assert all(len(c.text.split()) <= 10 for c in chunks)
    assert Chunker(10, 2).settings() == {"chunk_size": 10, "overlap": 2, "tokens": "words", "text_field": "text",
                                        "pdf_layout": False}


@pytest.mark.parametrize("size,overlap", [(10, 10), (10, 12), (0, 0), (10, -1)])
def test_bad_chunk_settings_are_a_data_error(size, overlap):
    with pytest.raises(DataError, match="overlap"):
        Chunker(size, overlap)


def test_bad_chunk_settings_through_the_cli(cli, docs, tiny_embedder, tmp_path):
    one_line_error(cli("data", "chunk", docs, "--out", tmp_path / "c.jsonl", "--embedder", tiny_embedder,
                       "--chunk-size", "16", "--overlap", "16"), "overlap 16")


# ------------------------------------------------------------------------------------------------- structure
def test_sections_that_fit_become_chunks_of_their_own(tokenizer):
    from ragtune.ingest.documents import Document

    sections = [f"# Part {name}\n\n{prose(10, i)}.\n\n{prose(6, i + 1)}." for i, name in enumerate("ABC")]
    text = "\n\n".join(sections)
    chunks = Chunker(30, 0, tokenizer).chunks(Document(text, "s.md"))
    assert [c.text for c in chunks] == sections


def test_a_chunk_never_ends_on_a_dangling_heading(tokenizer):
    from ragtune.ingest.documents import Document

    # each section is too big for one chunk, so the splitter works on paragraphs; a heading must start a chunk
    text = "\n\n".join(f"# Part {name}\n\n{prose(12, i)}.\n\n{prose(12, i + 1)}." for i, name in enumerate("ABC"))
    for overlap in (0, 4):
        chunks = Chunker(20, overlap, tokenizer).chunks(Document(text, "s.md"))
        for chunk in chunks:
            last_line = chunk.text.splitlines()[-1]
            assert not last_line.startswith("#"), chunk.text
        starts = [c.text for c in chunks if "# Part" in c.text]
        assert all(c.startswith("# Part") for c in starts) or overlap


def test_paragraph_boundaries_are_preferred_over_sentences_and_words(tokenizer):
    from ragtune.ingest.documents import Document

    paragraphs = [f"{prose(8, i)}. {prose(6, i + 3)}." for i in range(6)]
    text = "\n\n".join(paragraphs)
    chunks = Chunker(34, 0, tokenizer).chunks(Document(text, "p.txt"))
    assert len(chunks) >= 2
    for chunk in chunks:  # whole paragraphs only
        assert chunk.text.split("\n\n") == [p for p in paragraphs if p in chunk.text]
    # one paragraph too long for a chunk breaks between its sentences, not inside them
    sentences = [f"{prose(9, i)}." for i in range(4)]
    chunks = Chunker(22, 0, tokenizer).chunks(Document(" ".join(sentences), "s.txt"))
    assert all(c.text.endswith(".") for c in chunks)
    assert " ".join(c.text for c in chunks) == " ".join(sentences)


# ------------------------------------------------------------------------------------------------- stable ids
def test_rechunking_gives_the_same_ids_and_a_changed_file_changes_only_its_own(docs, tokenizer):
    chunker = Chunker(16, 4, tokenizer)
    first, _ = chunk_files([docs], chunker)
    again, _ = chunk_files([docs], chunker)
    assert [c.id for c in first] == [c.id for c in again]
    (docs / "notes.txt").write_text("Cholesterol levels rise with age.\n\nSmoking damage is different now.\n",
                                    encoding="utf-8")
    changed, _ = chunk_files([docs], chunker)

    def ids(chunks, name, same):
        return {c.id for c in chunks if (Path(c.source).name == name) == same}

    assert ids(changed, "notes.txt", False) == ids(first, "notes.txt", False)
    assert ids(changed, "notes.txt", True) != ids(first, "notes.txt", True)
    # the same text in two files gets two ids
    _write(docs / "copy.txt", (docs / "notes.txt").read_text())
    twice, _ = chunk_files([docs], chunker)
    texts = [c for c in twice if c.text.startswith("Cholesterol")]
    assert len(texts) == 2 and texts[0].id != texts[1].id


def test_offsets_index_the_document_text_of_every_type(docs, tokenizer):
    from ragtune.ingest.documents import source_files

    chunker = Chunker(12, 3, tokenizer)
    for path in source_files([docs]):
        documents = list(read_documents(path))
        chunks, _ = chunk_files([path], chunker)
        texts = {(d.page, i): d.text for i, d in enumerate(documents)}
        for chunk in chunks:
            assert any(t[chunk.start:chunk.end] == chunk.text for (page, _), t in texts.items()
                       if page == chunk.page), (path, chunk)


# ---------------------------------------------------------------------------------------------- bad inputs
def test_unreadable_files_are_skipped_with_a_warning_naming_them(cli, docs, tiny_embedder, tmp_path, caplog):
    blank_pdf(docs / "locked.pdf", password="pw")
    _write(docs / "corrupt.pdf", b"%PDF-1.4 garbage " * 20)
    blank_pdf(docs / "scanned.pdf")
    _write(docs / "empty.txt", "")
    _write(docs / "spaces.md", "  \n\n \n")
    _write(docs / "binary.txt", b"\x00\x01\x02 not text \x00" * 50)
    _write(docs / "latin1.txt", "first line\nsecond line\ncaf\xe9 au lait\n".encode("latin-1"))
    _write(docs / "bad.jsonl", '{"text": "fine record"}\n{"text": 42}\n')
    _write(docs / "notes.odt", b"PK not supported")
    out = tmp_path / "chunks.jsonl"
    code, stdout, err = chunk_cli(cli, tiny_embedder, out, docs)
    assert code == 0, err
    report = json.loads(stdout)
    skipped = report["skipped"]
    assert report["sources"] == 5  # the five good files are all still chunked
    assert {Path(c.source).name for c in read_chunks(out)} == {"guide.md", "notes.txt", "page.html", "paper.pdf",
                                                               "records.jsonl"}

    def warning(name):
        found = [w for w in skipped if w.startswith(str(docs / name))]
        assert len(found) == 1, (name, skipped)
        return found[0]

    assert "encrypted PDF" in warning("locked.pdf") and "not a readable PDF" not in warning("locked.pdf")
    assert "not a readable PDF" in warning("corrupt.pdf")
    assert "no text" in warning("scanned.pdf")
    assert "no text" in warning("empty.txt") and "no text" in warning("spaces.md")
    assert "binary" in warning("binary.txt")
    assert warning("latin1.txt").startswith(f"{docs / 'latin1.txt'}:3:") and "UTF-8" in warning("latin1.txt")
    assert warning("bad.jsonl").startswith(f"{docs / 'bad.jsonl'}:2:") and "'text'" in warning("bad.jsonl")
    assert len(skipped) == 8
    assert "notes.odt: skipped" in caplog.text  # an unsupported type in a folder is logged, not fatal


def test_human_output_lists_the_skipped_files(cli, tiny_embedder, tmp_path):
    folder = tmp_path / "docs"
    _write(folder / "ok.txt", "bone density")
    _write(folder / "broken.pdf", b"not a pdf at all")
    code, stdout, err = cli("data", "chunk", folder, "--out", tmp_path / "c.jsonl", "--embedder", tiny_embedder)
    assert code == 0, err
    assert "wrote 1 chunks from 1 documents" in stdout and "skipped:" in stdout and "broken.pdf" in stdout


@pytest.mark.parametrize("case", ["no_supported_files", "empty_folder", "unsupported_file", "missing",
                                  "link_loop", "nothing_readable", "non_string_text"])
def test_nothing_to_chunk_is_one_line_error(cli, tiny_embedder, tmp_path, case):
    folder = tmp_path / "in"
    folder.mkdir()
    target, needles = folder, []
    if case == "no_supported_files":
        _write(folder / "a.csv", "x,y\n")
        _write(folder / "b.odt", b"PK")
        needles = ["no .txt"]
    elif case == "empty_folder":
        needles = ["no .txt"]
    elif case == "unsupported_file":
        target = _write(folder / "a.csv", "x,y\n")
        needles = ["unsupported file type '.csv'"]
    elif case == "missing":
        target, needles = folder / "nope", ["no such file", "check the path"]
    elif case == "link_loop":
        target = folder / "l1"
        target.symlink_to(folder / "l2")
        (folder / "l2").symlink_to(target)
        needles = ["symbolic link that leads nowhere"]
    elif case == "nothing_readable":
        _write(folder / "empty.txt", "")
        _write(folder / "bad.pdf", b"garbage")
        needles = ["no text", "empty.txt"]
    else:
        target = _write(folder / "d.jsonl", '{"text": ["a", "list"]}\n')
        needles = [f"{target}:1:", "'text'", "--text-field"]
    out = tmp_path / "chunks.jsonl"
    one_line_error(cli("data", "chunk", target, "--out", out, "--embedder", tiny_embedder), *needles)  # no warnings too
    assert not out.exists()


def test_read_chunks_refuses_other_jsonl(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", '{"query": "a", "document": "b"}\n')
    with pytest.raises(DataError, match="not a ragtune chunk"):
        read_chunks(path)


@pytest.mark.parametrize(("change", "needles"), [
    ({"text": 123}, ["chunks.jsonl:2:", "field 'text' should be str, got int"]),
    ({"chunk": "2"}, ["chunks.jsonl:2:", "field 'chunk' should be int, got str"]),
    ({"page": True}, ["chunks.jsonl:2:", "field 'page' should be int or null, got bool"]),
    ({"id": "c1"}, ["chunks.jsonl:2:", "chunk id 'c1' already appears at line 1"]),
])
def test_read_chunks_checks_types_and_unique_ids(tmp_path, change, needles):
    rows = [{"id": f"c{i}", "text": f"text {i}", "source": "a.txt", "title": "a", "chunk": i, "start": 0, "end": 6}
            for i in (1, 2)]
    rows[1].update(change)
    path = _write(tmp_path / "chunks.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as error:
        read_chunks(path)
    assert all(n in str(error.value) for n in needles), str(error.value)


def test_a_bom_and_crlf_text_file_reads_cleanly(tokenizer, tmp_path):
    path = _write(tmp_path / "bom.txt", "\ufeffBone density.\r\n\r\nJoint pain.\r\n".encode("utf-8"))
    [document] = read_documents(path)
    assert document.text.startswith("Bone")
    chunks, warnings = chunk_files([path], Chunker(3, 0, tokenizer))
    assert not warnings and [c.text for c in chunks] == ["Bone density.", "Joint pain."]
