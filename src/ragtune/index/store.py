"""The index's store: the folder layout, the versions and their pointer, the writer lock, the manifest, and the
chunk database (SQLite). No pickle anywhere.

Layout: INDEX/CURRENT names the live version folder (v000001, v000002, ...). Every change is written into a new
version folder under the writer lock and becomes live by an atomic rename of CURRENT, so a crash or `kill -9`
mid-change leaves the previous version live and readers never see a half-written index. The previous version is
kept for readers still loading it; older ones are removed. Each version holds manifest.json, state.sqlite (the
indexed files and the deleted chunk ids) and its segments (s000001/, ...: see segments.py), each with chunks.sqlite,
faiss.index and bm25/, and multivector/ (token vectors for MaxSim) where it was built with --multivector. A
segment is written once and then hard-linked into every later version that keeps it.

Format 1 (before segments) kept one segment's files in the version folder itself, and the sources in its
chunks.sqlite; it is still read, and its first change rewrites it as format 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock

from ragtune.config.retrieval import RetrievalConfig
from ragtune.errors import ConfigError, DataError, where

CURRENT = "CURRENT"  # the live version's name
MANIFEST_FILE, CHUNKS_DB, FAISS_FILE, BM25_DIR = "manifest.json", "chunks.sqlite", "faiss.index", "bm25"
TOKENS_DIR = "multivector"  # the chunks' token vectors, where the index was built with a late-interaction model
MEMORY_DIR = "clara"  # the chunks' CLaRa memory vectors, where the index was built with --clara RUN
CHUNK_STORES = {"multivector": TOKENS_DIR, "clara": MEMORY_DIR}  # manifest key -> each segment's folder for it
STATE_DB = "state.sqlite"  # a version's indexed files and deleted chunk ids (format 2)
FORMAT_VERSION = 2
PG_PREFIX_FILE = ".pgvector-prefix"  # a pgvector index's table prefix, kept from before its first version
LEFTOVER = re.compile(r"\.lock|\.CURRENT\.tmp|\.staging-\d+|v\d{6}|\.pgvector-prefix|\.pgvector-retired\.json")  # a crashed first build's
SCHEMA = """
CREATE TABLE chunks (id TEXT PRIMARY KEY, row INTEGER UNIQUE, source TEXT, title TEXT, chunk INTEGER,
                     start INTEGER, "end" INTEGER, page INTEGER, text TEXT, metadata TEXT);
CREATE TABLE sources (source TEXT PRIMARY KEY, content_hash TEXT, chunks INTEGER, path TEXT);
CREATE INDEX chunks_source ON chunks(source);
"""
SEGMENT_SCHEMA = """
CREATE TABLE chunks (id TEXT PRIMARY KEY, row INTEGER UNIQUE, source TEXT, title TEXT, chunk INTEGER,
                     start INTEGER, "end" INTEGER, page INTEGER, text TEXT, metadata TEXT);
CREATE INDEX chunks_source ON chunks(source);
"""
STATE_SCHEMA = """
CREATE TABLE sources (source TEXT PRIMARY KEY, content_hash TEXT, chunks INTEGER, path TEXT);
CREATE TABLE deleted (segment TEXT, id TEXT, PRIMARY KEY (segment, id));
"""
REBUILD = "rebuild the index with `ragtune index build --overwrite`"
# what every reader of a manifest relies on; a field's parent comes before it
MANIFEST_FIELDS = {"embedder": dict, "embedder.name": str, "embedder.dimension": int, "embedder.path": str,
                   "chunker": dict, "chunker.chunk_size": int, "chunker.overlap": int, "retrieval": dict}
KINDS = {dict: "a JSON object", int: "an integer", str: "a string"}




def is_index(path: str | Path) -> bool:
    """A folder that holds a ragtune index (its CURRENT pointer)."""
    return (Path(path) / CURRENT).is_file()


@dataclass(frozen=True)
class IndexedFile:
    """An indexed file: its content hash, its chunk count, and its absolute path at indexing, so that any spelling
    of the same file, from any working directory, finds it."""

    content_hash: str
    chunks: int
    path: str

    @classmethod
    def of(cls, file: Path, content_hash: str, chunks: int) -> "IndexedFile":
        return cls(content_hash, chunks, str(file.resolve()))


def current_version(root: Path) -> Path:
    pointer = root / CURRENT
    if not pointer.is_file():
        raise DataError(f"{root}: not a ragtune index (no CURRENT); build one with `ragtune index build`")
    return root / pointer.read_text(encoding="utf-8").strip()


def damaged(path: str | Path, problem: str) -> DataError:
    return DataError(f"{path}: {problem}; {REBUILD}")


def _wrong_field(manifest: dict, name: str, kind: type) -> str | None:
    """Why the dotted field `name` of the manifest is not a `kind`, or None when it is."""
    value = manifest
    for key in name.split("."):
        if key not in value:
            return f"is missing (it should be {KINDS[kind]})"
        value = value[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        return f"should be {KINDS[kind]}, not {json.dumps(value)}"
    return None


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise damaged(path, f"unreadable ({exc})") from None
    if not isinstance(manifest, dict):
        raise damaged(path, f"should be a JSON object, not {type(manifest).__name__}")
    problem = _wrong_field(manifest, "format_version", int)
    if problem:
        raise damaged(where(path, field="format_version"), problem)
    if manifest["format_version"] > FORMAT_VERSION:
        raise DataError(f"{folder.parent}: index format version {manifest['format_version']} is newer than this "
                        f"ragtune reads ({FORMAT_VERSION}); upgrade ragtune or rebuild the index with this version")
    for name, kind in MANIFEST_FIELDS.items():
        problem = _wrong_field(manifest, name, kind)
        if problem:
            raise damaged(where(path, field=name), problem)
    return manifest


def retrieval_config(folder: Path, manifest: dict) -> RetrievalConfig:
    from ragtune.config.load import validate_config

    try:
        return validate_config("retrieval", manifest["retrieval"])
    except ConfigError as exc:
        raise damaged(where(folder / MANIFEST_FILE, field="retrieval"), "; ".join(exc.problems)) from None


def open_db(path: Path, tables: tuple[str, ...] = ("chunks", "sources")) -> sqlite3.Connection:
    """A chunk or state database, read-only; read once here so that a damaged file fails now, not mid-query."""
    if not path.is_file():
        raise damaged(path, "missing")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        db.execute("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in tables)).fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise damaged(path, f"not a readable {'chunk' if 'chunks' in tables else 'state'} database ({exc})") from None
    return db


def link_folder(source: Path, target: Path) -> None:
    """`target` as a copy of `source` made of hard links (a segment costs nothing to keep); a copy where the file
    system has no hard links."""
    for path in source.rglob("*"):
        out = target / path.relative_to(source)
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, out)
        except OSError:
            shutil.copy2(path, out)


@contextmanager
def writer(root: Path, after: Callable[[], object] | None = None) -> Iterator[Path]:
    """Hold the writer lock and yield a fresh staging folder; on success it becomes the live version, and then
    `after` runs, still under the lock (a pgvector index drops the tables no version names any more)."""
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".lock"):  # flock on POSIX, msvcrt on Windows
        pointer = root / CURRENT
        live = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else ""
        sound = not pointer.is_file() or bool(live) and (root / live).is_dir()  # never guess from a broken CURRENT
        for stale in [*root.glob(".staging-*"), *(v for v in root.glob("v[0-9]*") if sound and v.name > live)]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a writer that crashed before switching CURRENT
        staging = root / f".staging-{os.getpid()}"
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        versions = sorted(p.name for p in root.glob("v[0-9]*") if p.is_dir())
        name = f"v{int(versions[-1][1:]) + 1 if versions else 1:06d}"
        for file in staging.rglob("*"):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        os.replace(staging, root / name)
        pointer = root / ".CURRENT.tmp"
        pointer.write_text(name, encoding="utf-8")
        os.replace(pointer, root / CURRENT)
        for old in versions[:-1]:  # keep the version just replaced, for readers still opening it
            shutil.rmtree(root / old, ignore_errors=True)
        if after is not None:
            after()
