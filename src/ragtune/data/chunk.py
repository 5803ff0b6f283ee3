"""Ingest documents (.txt, .md, .html, .pdf, .jsonl) and split them into chunks sized in the embedder's tokens.

Splitting is recursive on structure: headings first, then paragraphs, lines, sentences and finally words, so a
chunk breaks at the coarsest boundary that keeps it under `chunk_size` tokens. Consecutive chunks share about
`overlap` tokens. Chunk ids hash the source, the chunk number and the text, so re-chunking an unchanged file
gives the same ids. Unreadable files (encrypted or corrupt PDFs, binaries) are skipped with a warning naming them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterator

from ragtune.errors import DataError, missing_path
from ragtune.utils import decode_utf8

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl")
# Boundaries from coarse to fine; each keeps its separator with the text before it.
SEPARATORS = [r"\n(?=#{1,6} )", r"\n\s*\n", r"\n", r"(?<=[.!?])\s+", r"\s+"]
HEADING = re.compile(r"\s*#{1,6} [^\n]*\s*")


@dataclass
class Document:
    """One unit of a source file: a whole text file, a PDF page, or a JSONL record."""

    text: str
    source: str
    title: str = ""
    page: int | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class Chunk:
    id: str
    text: str
    source: str
    title: str
    chunk: int  # number of the chunk within its source
    start: int  # character offsets in the document text
    end: int
    page: int | None = None
    metadata: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class _HTMLText(HTMLParser):
    """Visible text of an HTML page, with headings kept as markdown headings for the splitter."""

    SKIP = {"script", "style", "noscript", "head"}
    BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "table", "ul", "ol"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag == "p" else "\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        if tag == "title":
            self._in_title = False
        if re.fullmatch(r"h[1-6]", tag) or tag == "p":
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path}: a binary file, not text")
    return decode_utf8(raw, lambda line: f"{path}:{line}")


def _markdown_title(text: str, fallback: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else fallback


def _pdf(path: Path) -> Iterator[Document]:
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
            yield Document(page.extract_text() or "", str(path), title, number)
    except DataError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not a readable PDF ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    finally:
        pypdf_log.setLevel(level)


def _jsonl(path: Path, text_field: str) -> Iterator[Document]:
    from ragtune.data.readers import read_rows

    for row in read_rows(path):
        text = row.string(text_field, row.data.get(text_field), "it holds the document text; set --text-field to "
                          "your text column")
        meta = {k: v for k, v in row.data.items() if k != text_field}
        meta.setdefault("record", row.line if row.line is not None else row.index + 1)  # one document per record
        title = str(meta.get("title") or path.stem)
        yield Document(text, str(path), title, None, meta)


def read_documents(path: Path, text_field: str = "text") -> Iterator[Document]:
    """The documents inside one file; DataError when it cannot be read."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        yield from _pdf(path)
    elif suffix == ".jsonl":
        yield from _jsonl(path, text_field)
    elif suffix in (".html", ".htm"):
        parser = _HTMLText()
        parser.feed(_read_text(path))
        text = re.sub(r"\n{3,}", "\n\n", "".join(parser.parts)).strip()  # the parser already decoded entities
        yield Document(text, str(path), parser.title.strip() or path.stem)
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


def _split(text: str, start: int, fits: Callable[[str], bool], level: int = 0) -> list[tuple[int, int]]:
    """Spans (start, end) of pieces that fit, splitting at the coarsest boundary that works."""
    if fits(text) or level >= len(SEPARATORS):
        return [(start, start + len(text))] if text.strip() else []
    spans, cursor = [], 0
    for match in re.finditer(SEPARATORS[level], text):
        spans.append((cursor, match.end()))
        cursor = match.end()
    spans.append((cursor, len(text)))
    pieces = []
    for a, b in spans:
        pieces += _split(text[a:b], start + a, fits, level + 1)
    return pieces


def _merge(text: str, pieces: list[tuple[int, int]], size: Callable[[str], int], chunk_size: int,
           overlap: int) -> list[tuple[int, int]]:
    """Greedily join neighbouring pieces up to chunk_size tokens; each chunk starts with ~overlap tokens of the
    previous one."""
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(pieces):
        start = pieces[i][0]
        j = i + 1
        while j < len(pieces) and size(text[start:pieces[j][1]]) <= chunk_size:
            j += 1
        while i + 1 < j < len(pieces) and HEADING.fullmatch(text[pieces[j - 1][0]:pieces[j - 1][1]]):
            j -= 1  # a heading goes with the text under it, never at the end of a chunk
        chunks.append((start, pieces[j - 1][1]))
        if j >= len(pieces):
            break
        back = j  # step back over whole pieces while they fit in the overlap budget
        while overlap and back - 1 > i and size(text[pieces[back - 1][0]:pieces[j - 1][1]]) <= overlap:
            back -= 1
        i = back if back > i else j
    return chunks


@dataclass
class Chunker:
    """Split documents into chunks of at most `chunk_size` tokens of `tokenizer` (words without one)."""

    chunk_size: int = 256
    overlap: int = 32
    tokenizer: object | None = None
    text_field: str = "text"  # the text of a .jsonl document

    def __post_init__(self):
        if self.chunk_size <= 0 or self.overlap < 0 or self.overlap >= self.chunk_size:
            raise DataError(f"--chunk-size {self.chunk_size} and --overlap {self.overlap}: the overlap must be at "
                            "least 0 and smaller than the chunk size")

    def size(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def settings(self) -> dict:
        name = getattr(self.tokenizer, "name_or_path", None) if self.tokenizer is not None else "words"
        return {"chunk_size": self.chunk_size, "overlap": self.overlap, "tokens": name, "text_field": self.text_field}

    @classmethod
    def for_embedder(cls, model, chunk_size: int | None, overlap: int, text_field: str = "text") -> "Chunker":
        """Chunks sized in a sentence-transformers model's tokens that it reads whole: a size above its max sequence
        length (less the special tokens it adds) would lose each chunk's tail from its vector, so it is capped.
        No size: 256 tokens, or what the model reads if that is less."""
        tokenizer = model.tokenizer
        limit = model.max_seq_length - tokenizer.num_special_tokens_to_add(pair=False) if model.max_seq_length \
            else None
        if chunk_size is None:
            chunk_size = min(cls.chunk_size, limit or cls.chunk_size)
        else:
            cls(chunk_size, overlap)  # a bad size or overlap is reported as the user gave it
            if limit is not None and chunk_size > limit:
                log.warning("--chunk-size %d is more than the embedder reads (%d tokens after its special tokens); "
                            "chunks are capped at %d tokens so every token reaches the vector", chunk_size, limit,
                            limit)
                chunk_size = limit
        return cls(chunk_size, overlap, tokenizer, text_field)

    def chunks(self, document: Document, first: int = 0) -> list[Chunk]:
        text = document.text
        pieces = _split(text, 0, lambda t: self.size(t) <= self.chunk_size)
        out = []
        for number, (a, b) in enumerate(_merge(text, pieces, self.size, self.chunk_size, self.overlap), start=first):
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            body = text[a:b]
            digest = hashlib.sha256(f"{document.source}\x00{document.page}\x00{number}\x00{body}".encode()).hexdigest()
            out.append(Chunk(digest[:20], body, document.source, document.title, number, a, b, document.page,
                             dict(document.metadata)))
        return out


def chunk_files(inputs: list[str | Path], chunker: Chunker, metadata: dict | None = None,
                names: dict[Path, str] | None = None) -> tuple[list[Chunk], list[str]]:
    """Chunks of every readable file, and a warning for each file skipped (unreadable or empty). `names` gives
    a file the source name it is known by (its spelling when an index first took it), which its chunk ids hash."""
    chunks, warnings = [], []
    for path in source_files(inputs):
        try:
            documents = list(read_documents(path, chunker.text_field))
        except DataError as exc:
            warnings.append(f"{exc}; skipped")
            continue
        before = len(chunks)
        number = 0
        for document in documents:
            document.metadata = {**(metadata or {}), **document.metadata}
            if names and path in names:
                document.source = names[path]
            found = chunker.chunks(document, number)
            number += len(found)
            chunks += found
        if len(chunks) == before:
            warnings.append(f"{path}: no text (empty document, or a scanned PDF without a text layer); skipped")
    return chunks, warnings  # the caller shows the warnings, or folds them into its error when nothing is left


def write_chunks(chunks: list[Chunk], out: str | Path) -> None:
    from ragtune.utils import write_atomic

    write_atomic(out, "".join(c.to_json() + "\n" for c in chunks))


CHUNK_TYPES = {"id": (str,), "text": (str,), "source": (str,), "title": (str, type(None)), "chunk": (int,),
               "start": (int,), "end": (int,), "page": (int, type(None)), "metadata": (dict,)}


def read_chunks(path: str | Path) -> list[Chunk]:
    """Chunks written by `ragtune data chunk`, every field of the right type and every id once."""
    from ragtune.data.readers import read_rows

    out, seen = [], {}
    for row in read_rows(path):
        try:
            chunk = Chunk(**row.data)
        except TypeError:
            raise DataError(f"{row.where}: not a ragtune chunk (fields id, text, source, ...); write chunks with "
                            "`ragtune data chunk`") from None
        for name, kind in CHUNK_TYPES.items():
            value = getattr(chunk, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                expected = " or ".join("null" if k is type(None) else k.__name__ for k in kind)
                raise DataError(f"{row.where}: field '{name}' should be {expected}, got {type(value).__name__} "
                                f"({str(value)[:30]!r}); write chunks with `ragtune data chunk`")
        if chunk.id in seen:
            raise DataError(f"{row.where}: chunk id '{chunk.id}' already appears at line {seen[chunk.id]}; every "
                            "chunk needs its own id (re-run `ragtune data chunk`)")
        seen[chunk.id] = row.line
        out.append(chunk)
    return out
