"""Split documents into chunks sized in the embedder's tokens; write and read chunks.jsonl.

Splitting is recursive on structure: headings first, then paragraphs, lines, sentences and finally words, so a
chunk breaks at the coarsest boundary that keeps it under `chunk_size` tokens. Consecutive chunks share about
`overlap` tokens. Chunk ids hash the source, the chunk number and the text, so re-chunking an unchanged file
gives the same ids. Files that cannot be read are skipped with a warning naming them.

Each chunk of a document with markdown headings (Markdown, HTML, DOCX, PPTX, XLSX) records its heading path in
`metadata["headings"]`: the headings it sits under at its first character, outermost first (["Install", "Linux"]).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ragtune.errors import DataError
from ragtune.ingest.documents import Document, read_documents, source_files
from ragtune.progress import counting

log = logging.getLogger(__name__)

# Boundaries from coarse to fine; each keeps its separator with the text before it.
SEPARATORS = [r"\n(?=#{1,6} )", r"\n\s*\n", r"\n", r"(?<=[.!?])\s+", r"\s+"]
HEADING = re.compile(r"\s*#{1,6} [^\n]*\s*")
HEADING_LINE = re.compile(r"^(#{1,6}) +(.+?)[ #]*$", flags=re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)  # '# comment' inside a code block is no heading


def heading_starts(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, heading) of every markdown heading outside code fences, in order."""
    fenced = [m.span() for m in FENCE.finditer(text)]
    return [(m.start(), len(m.group(1)), m.group(2).strip()) for m in HEADING_LINE.finditer(text)
            if not any(a <= m.start() < b for a, b in fenced)]


def heading_path(headings: list[tuple[int, int, str]], offset: int) -> list[str]:
    """The headings in force at `offset`, outermost first: a heading closes every heading at its level or below."""
    path: list[tuple[int, str]] = []
    for start, level, name in headings:
        if start > offset:
            break
        path = [(lv, n) for lv, n in path if lv < level] + [(level, name)]
    return [name for _, name in path]


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
    pdf_layout: bool = False  # PDF pages as laid out (pypdf's layout mode), not in reading order

    def __post_init__(self):
        if self.chunk_size <= 0 or self.overlap < 0 or self.overlap >= self.chunk_size:
            raise DataError(f"--chunk-size {self.chunk_size} and --overlap {self.overlap}: the overlap must be at "
                            "least 0 and smaller than the chunk size")

    def size(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])  # no length warning

    def settings(self) -> dict:
        name = getattr(self.tokenizer, "name_or_path", None) if self.tokenizer is not None else "words"
        return {"chunk_size": self.chunk_size, "overlap": self.overlap, "tokens": name, "text_field": self.text_field,
                "pdf_layout": self.pdf_layout}

    @classmethod
    def for_embedder(cls, model, chunk_size: int | None, overlap: int, text_field: str = "text",
                     pdf_layout: bool = False) -> "Chunker":
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
        return cls(chunk_size, overlap, tokenizer, text_field, pdf_layout)

    def chunks(self, document: Document, first: int = 0) -> list[Chunk]:
        text = document.text
        pieces = _split(text, 0, lambda t: self.size(t) <= self.chunk_size)
        headings = heading_starts(text)
        out = []
        for number, (a, b) in enumerate(_merge(text, pieces, self.size, self.chunk_size, self.overlap), start=first):
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            body = text[a:b]
            digest = hashlib.sha256(f"{document.source}\x00{document.page}\x00{number}\x00{body}".encode()).hexdigest()
            path = heading_path(headings, a)
            metadata = {**document.metadata, "headings": path} if path else dict(document.metadata)
            out.append(Chunk(digest[:20], body, document.source, document.title, number, a, b, document.page,
                             metadata))
        return out


def chunk_files(inputs: list[str | Path], chunker: Chunker, metadata: dict | None = None,
                names: dict[Path, str] | None = None) -> tuple[list[Chunk], list[str]]:
    """Chunks of every readable file, and a warning for each file skipped (unreadable or empty). `names` gives
    a file the source name it is known by (its spelling when an index first took it), which its chunk ids hash."""
    chunks, warnings = [], []
    files = list(source_files(inputs))
    with counting("Chunking files", len(files)) as advance:
        for path in files:
            advance(1)
            try:
                documents = list(read_documents(path, chunker.text_field, chunker.pdf_layout))
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
    from ragtune.ingest.readers import read_rows

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
