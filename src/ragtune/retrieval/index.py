"""A persistent, updatable retrieval index: FAISS + BM25 + chunk texts in SQLite + a manifest. No pickle.

Layout: INDEX/CURRENT names the live version folder (v000001, v000002, ...). Every change (`add`, `delete`) is
written into a new version folder under a writer lock and becomes live by an atomic rename of CURRENT, so a
crash or `kill -9` mid-change leaves the previous version live and readers never see a half-written index. The
previous version is kept for readers still loading it; older ones are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ragtune.config.retrieval import RetrievalConfig
from ragtune.data.chunk import Chunk, Chunker, chunk_files, source_files
from ragtune.errors import ConfigError, DataError, ModelError, OutputError, where
from ragtune.retrieval.base import Hits
from ragtune.utils import output_folder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LEFTOVER = re.compile(r"\.lock|\.CURRENT\.tmp|\.staging-\d+|v\d{6}")  # what a crashed first build leaves
SCHEMA = """
CREATE TABLE chunks (id TEXT PRIMARY KEY, row INTEGER UNIQUE, source TEXT, title TEXT, chunk INTEGER,
                     start INTEGER, "end" INTEGER, page INTEGER, text TEXT, metadata TEXT);
CREATE TABLE sources (source TEXT PRIMARY KEY, content_hash TEXT, chunks INTEGER, path TEXT);
CREATE INDEX chunks_source ON chunks(source);
"""
REBUILD = "rebuild the index with `ragtune index build --overwrite`"
# what every reader of a manifest relies on; a field's parent comes before it
MANIFEST_FIELDS = {"embedder": dict, "embedder.name": str, "embedder.dimension": int, "embedder.path": str,
                   "chunker": dict, "chunker.chunk_size": int, "chunker.overlap": int, "retrieval": dict}
KINDS = {dict: "a JSON object", int: "an integer", str: "a string"}


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Source:
    """An indexed file: its content hash, its chunk count, and its absolute path at indexing, so that any spelling
    of the same file, from any working directory, finds it."""

    content_hash: str
    chunks: int
    path: str

    @classmethod
    def of(cls, file: Path, content_hash: str, chunks: int) -> "Source":
        return cls(content_hash, chunks, str(file.resolve()))


@dataclass
class ChangeReport:
    added_sources: list[str] = field(default_factory=list)
    changed_sources: list[str] = field(default_factory=list)
    unchanged_sources: list[str] = field(default_factory=list)
    removed_sources: list[str] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _current(root: Path) -> Path:
    pointer = root / "CURRENT"
    if not pointer.is_file():
        raise DataError(f"{root}: not a ragtune index (no CURRENT); build one with `ragtune index build`")
    return root / pointer.read_text(encoding="utf-8").strip()


def _damaged(path: str | Path, problem: str) -> DataError:
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


def _manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(path, f"unreadable ({exc})") from None
    if not isinstance(manifest, dict):
        raise _damaged(path, f"should be a JSON object, not {type(manifest).__name__}")
    problem = _wrong_field(manifest, "format_version", int)
    if problem:
        raise _damaged(where(path, field="format_version"), problem)
    if manifest["format_version"] > FORMAT_VERSION:
        raise DataError(f"{folder.parent}: index format version {manifest['format_version']} is newer than this "
                        f"ragtune reads ({FORMAT_VERSION}); upgrade ragtune or rebuild the index with this version")
    for name, kind in MANIFEST_FIELDS.items():
        problem = _wrong_field(manifest, name, kind)
        if problem:
            raise _damaged(where(path, field=name), problem)
    return manifest


def _retrieval_config(folder: Path, manifest: dict) -> RetrievalConfig:
    from ragtune.config.load import validate_config

    try:
        return validate_config("retrieval", manifest["retrieval"])
    except ConfigError as exc:
        raise _damaged(where(folder / "manifest.json", field="retrieval"), "; ".join(exc.problems)) from None


def _open_chunks(path: Path) -> sqlite3.Connection:
    """The chunk database, read-only; read once here so that a damaged file fails now, not mid-query."""
    if not path.is_file():
        raise _damaged(path, "missing")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        db.execute("SELECT (SELECT COUNT(*) FROM chunks), (SELECT COUNT(*) FROM sources)").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _damaged(path, f"not a readable chunk database ({exc})") from None
    return db


def _counts(chunks: list[Chunk]) -> dict[str, int]:
    """Chunks per source."""
    counts: dict[str, int] = {}
    for chunk in chunks:
        counts[chunk.source] = counts.get(chunk.source, 0) + 1
    return counts


def _no_text(inputs: list[str], report: ChangeReport) -> DataError:
    return DataError(f"{', '.join(inputs)}: no text to index ({'; '.join(report.warnings[:3])})")


@contextmanager
def _writer(root: Path) -> Iterator[Path]:
    """Hold the writer lock and yield a fresh staging folder; on success it becomes the live version."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pointer = root / "CURRENT"
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
        os.replace(pointer, root / "CURRENT")
        for old in versions[:-1]:  # keep the version just replaced, for readers still opening it
            shutil.rmtree(root / old, ignore_errors=True)


class Index:
    """Open an index folder for queries; `build`, `add` and `delete` write new versions."""

    def __init__(self, root: str | Path, placement=None, embedder: str | None = None):
        from ragtune.models.device import choose_placement

        self.root = Path(root)
        self.folder = _current(self.root)
        self.manifest = _manifest(self.folder)
        self.placement = placement or choose_placement()
        self._embedder_path: str | None = None
        self._check_embedder(embedder)
        self.config = _retrieval_config(self.folder, self.manifest)
        self._db = _open_chunks(self.folder / "chunks.sqlite")
        self._dense = self._bm25 = self._faiss = None
        # Read this version's FAISS and BM25 files now: a long-lived reader must not find them removed by later
        # writes (only the live and the previous version are kept).
        self.faiss()
        self.bm25()

    def _check_embedder(self, embedder: str | None) -> None:
        if embedder is None:
            return
        from ragtune.models.fingerprint import model_fingerprint
        from ragtune.models.resolve import resolve_model

        built = self.manifest["embedder"]
        path = resolve_model(embedder)
        now = model_fingerprint(path)
        if now is not None and built.get("fingerprint") is not None:
            same = now == built["fingerprint"]
        else:  # weights not on disk to compare: only the same name will do
            same = embedder in (built["name"], built.get("path"))
        if same:
            self._embedder_path = str(path)  # the same weights, maybe elsewhere: serve from there
        else:
            raise ModelError(f"{self.root}: built with embedder '{built['name']}'; '{embedder}' is a different "
                             "model, so its vectors would not match; use the index's own embedder or rebuild")

    def _check_weights(self, info: dict) -> None:
        """Refuse an embedder whose weights changed since the build (say, retrained into the same folder)."""
        from ragtune.models.fingerprint import model_fingerprint

        now = model_fingerprint(info["path"])
        if now is not None and info.get("fingerprint") and now != info["fingerprint"]:
            raise ModelError(f"{self.root}: the embedder at {info['path']} has changed since this index was built "
                             "(its weights differ), so new vectors would not match the stored ones; rebuild with "
                             "`ragtune index build --overwrite`, or put the original model back at that path")

    # ------------------------------------------------------------------------------------------------ reading
    @property
    def size(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def faiss(self):
        """The FAISS index (row i is the chunk with row = i), read from disk once."""
        if self._faiss is None:
            import faiss

            path = self.folder / "faiss.index"
            if not path.is_file():
                raise _damaged(path, "missing")
            try:
                loaded = faiss.read_index(str(path))
            except RuntimeError:
                raise _damaged(path, "not a readable FAISS index (damaged or not written by ragtune)") from None
            if loaded.d != self.manifest["embedder"]["dimension"]:
                raise _damaged(path, f"holds {loaded.d}-dimensional vectors, but manifest.json says "
                                     f"{self.manifest['embedder']['dimension']}")
            self._faiss = loaded
            if hasattr(self._faiss, "make_direct_map"):  # IVF: allow reconstructing vectors by row
                self._faiss.make_direct_map()
        return self._faiss

    def vectors(self, rows: list[int]) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.manifest["embedder"]["dimension"]), dtype=np.float32)
        return self.faiss().reconstruct_batch(np.array(rows, dtype=np.int64))

    def dense(self):
        if self._dense is None:
            from ragtune.models.load import load_embedder
            from ragtune.retrieval.dense import DenseRetriever

            info = self.manifest["embedder"]
            path = self._embedder_path or info["path"]
            if self._embedder_path is None:
                self._check_weights(info)
            model = load_embedder(path, self.placement, info.get("max_seq_length"))
            retriever = DenseRetriever(model, self.placement, self.config.dense, path)
            retriever.index = self.faiss()
            retriever.doc_ids = [r[0] for r in self._db.execute("SELECT id FROM chunks ORDER BY row")]
            self._dense = retriever
        return self._dense

    def bm25(self):
        if self._bm25 is None:
            from ragtune.retrieval.bm25 import BM25Retriever

            folder = self.folder / "bm25"
            try:
                self._bm25 = BM25Retriever.load(folder)
            except DataError as exc:
                raise DataError(f"{exc}; {REBUILD}") from None
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise _damaged(folder, f"not a readable BM25 index ({' '.join(str(exc).split())})") from None
        return self._bm25

    def chunks(self, ids: list[str]) -> list[Chunk]:
        """Chunks by id, in the order asked."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(f'SELECT id, text, source, title, chunk, start, "end", page, metadata FROM chunks '
                                f"WHERE id IN ({marks})", ids).fetchall()
        found = {r[0]: Chunk(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8])) for r in rows}
        return [found[i] for i in ids if i in found]

    def sources(self) -> dict[str, Source]:
        """Every indexed file by the name it was indexed under."""
        if "path" in {column for _, column, *_ in self._db.execute("PRAGMA table_info(sources)")}:
            rows = self._db.execute("SELECT source, content_hash, chunks, path FROM sources").fetchall()
        else:  # written before paths were stored: relative names resolve from the working directory
            rows = [(s, h, n, str(Path(s).resolve()))
                    for s, h, n in self._db.execute("SELECT source, content_hash, chunks FROM sources")]
        return {s: Source(h, n, p) for s, h, n, p in rows}

    def texts(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT id, text FROM chunks ORDER BY row"))

    def info(self) -> dict:
        sources = self._db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]
        size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        return {"path": str(self.root), "version": self.folder.name, "format_version": self.manifest["format_version"],
                "embedder": self.manifest["embedder"]["name"], "dimension": self.manifest["embedder"]["dimension"],
                "chunker": self.manifest["chunker"], "sources": sources, "chunks": self.size, "bytes": size,
                "updated": self.manifest.get("updated")}

    def close(self) -> None:
        self._db.close()


# --------------------------------------------------------------------------------------------------- writing
def _embedder_info(name: str, placement, config: RetrievalConfig, max_seq_length: int | None):
    from ragtune.models.fingerprint import model_fingerprint
    from ragtune.models.load import load_embedder
    from ragtune.models.resolve import resolve_model
    from ragtune.retrieval.dense import DenseRetriever

    path = resolve_model(name)
    model = load_embedder(path, placement, max_seq_length)
    retriever = DenseRetriever(model, placement, config.dense, path)
    info = {"name": name, "path": str(Path(path).resolve()) if Path(path).exists() else path,
            "fingerprint": model_fingerprint(path), "dimension": model.get_embedding_dimension(),
            "max_seq_length": model.max_seq_length}
    return retriever, info


def _write_version(staging: Path, manifest: dict, rows: list[tuple[Chunk, str]], vectors: np.ndarray,
                   sources: dict[str, Source], config: RetrievalConfig) -> None:
    """Write every file of one index version into `staging`."""
    import faiss

    from ragtune.retrieval.bm25 import BM25Retriever
    from ragtune.retrieval.dense import build_faiss_index

    db = sqlite3.connect(staging / "chunks.sqlite")
    db.executescript(SCHEMA)
    db.executemany('INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                   [(c.id, i, c.source, c.title, c.chunk, c.start, c.end, c.page, c.text,
                     json.dumps(c.metadata, ensure_ascii=False)) for i, (c, _) in enumerate(rows)])
    counts = _counts([c for c, _ in rows])
    db.executemany("INSERT INTO sources VALUES (?, ?, ?, ?)",
                   [(s, rec.content_hash, counts.get(s, 0), rec.path) for s, rec in sources.items()])
    db.commit()
    db.close()
    faiss.write_index(build_faiss_index(vectors, config.dense), str(staging / "faiss.index"))
    BM25Retriever.build({c.id: c.text for c, _ in rows}, config.bm25).save(staging / "bm25")
    manifest = {**manifest, "chunks": len(rows), "sources": len(sources),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _new_chunks(files: list[Path], chunker: Chunker, report: ChangeReport, metadata: dict | None = None,
                names: dict[Path, str] | None = None) -> list[Chunk]:
    chunks, warnings = chunk_files(files, chunker, metadata, names)
    report.warnings += warnings
    return chunks


def build_index(out: str | Path, inputs: list[str], embedder: str, config: RetrievalConfig | None = None,
                chunk_size: int | None = None, overlap: int = 32, overwrite: bool = False, placement=None,
                text_field: str = "text", metadata: dict | None = None) -> ChangeReport:
    """Chunk, embed and index every document under `inputs` into a new index at `out`; `metadata` is added to
    every chunk."""
    from ragtune.models.device import choose_placement

    start = time.perf_counter()
    out, config = output_folder(out), config or RetrievalConfig()
    if (out / "CURRENT").exists() and not overwrite:
        raise OutputError(f"{out}: an index exists; pass --overwrite to rebuild it, or use `ragtune index add`")
    if out.exists() and not (out / "CURRENT").exists() and any(not LEFTOVER.fullmatch(p.name)
                                                               for p in out.iterdir()):
        raise OutputError(f"{out}: exists and is not a ragtune index; choose an empty or new folder")
    files = source_files(inputs)
    placement = placement or choose_placement(config.device, config.precision)
    Chunker(chunk_size or Chunker.chunk_size, overlap)  # a bad size fails before the embedder loads
    retriever, info = _embedder_info(embedder, placement, config, None)
    chunker = Chunker.for_embedder(retriever.model, chunk_size, overlap, text_field)
    report = ChangeReport()
    chunks = _new_chunks(files, chunker, report, metadata)
    if not chunks:
        raise _no_text(inputs, report)
    vectors = retriever.encode_documents([c.text for c in chunks])
    manifest = {"format_version": FORMAT_VERSION, "embedder": info, "chunker": chunker.settings(),
                "retrieval": json.loads(config.model_dump_json(exclude={"pipelines"}))}
    counts = _counts(chunks)
    hashes = {str(f): Source.of(f, file_hash(f), counts[str(f)]) for f in files if str(f) in counts}  # none skipped
    report.added_sources = list(hashes)
    with _writer(out) as staging:  # with --overwrite, the old version stays live until the new one is complete
        _write_version(staging, manifest, [(c, c.source) for c in chunks], vectors, hashes, config)
    report.chunks_added = len(chunks)
    report.seconds = time.perf_counter() - start
    return report


def _change(root: str | Path, plan, embedder: str | None, placement) -> ChangeReport:
    """Apply `plan(index, report) -> (kept chunk ids, new chunks, source hashes)` as a new version."""
    start = time.perf_counter()
    root = Path(root)
    _current(root)  # not an index: say so before the writer lock creates anything there
    with _writer(root) as staging:
        index = Index(root, placement, embedder)
        report = ChangeReport()
        keep, new_chunks, hashes = plan(index, report)
        old_rows = {cid: row for cid, row in index._db.execute("SELECT id, row FROM chunks")}
        kept = index.chunks(keep)
        old_vectors = index.vectors([old_rows[c.id] for c in kept])
        new_vectors = index.dense().encode_documents([c.text for c in new_chunks]) if new_chunks else \
            np.zeros((0, old_vectors.shape[1]), dtype=np.float32)
        rows = [(c, c.source) for c in kept + new_chunks]
        if not rows:
            raise DataError(f"{root}: the change would leave the index empty; delete the folder instead")
        vectors = np.ascontiguousarray(np.vstack([old_vectors, new_vectors]), dtype=np.float32)
        _write_version(staging, index.manifest, rows, vectors, hashes, index.config)
        report.chunks_added, report.chunks_removed = len(new_chunks), len(old_rows) - len(kept)
        index.close()
    report.seconds = time.perf_counter() - start
    return report


def _source_names(paths: list[str], known: dict[str, Source]) -> list[str]:
    """The names the index knows files by: their spelling at indexing, matched exactly or as the same file on disk
    (an absolute path for one indexed as relative, or a relative path from another working directory); a file the
    index does not know keeps its own spelling."""
    on_disk: dict[Path, str] | None = None
    names = []
    for path in paths:
        if path not in known:
            if on_disk is None:
                on_disk = {Path(rec.path): name for name, rec in known.items()}
            path = on_disk.get(Path(path).resolve(), path)
        names.append(path)
    return names


def add_to_index(root: str | Path, inputs: list[str], embedder: str | None = None, placement=None,
                 metadata: dict | None = None) -> ChangeReport:
    """Index new and changed files (found by content hash), chunked as at the build; unchanged ones cost nothing.
    `metadata` is added to every new chunk."""
    files = source_files(inputs)

    def plan(index: Index, report: ChangeReport):
        known = index.sources()
        fresh = {name: (f, file_hash(f)) for name, f in zip(_source_names([str(f) for f in files], known), files)}
        for source, (_, digest) in fresh.items():
            bucket = report.changed_sources if source in known and known[source].content_hash != digest else \
                report.unchanged_sources if source in known else report.added_sources
            bucket.append(source)
        todo = {fresh[s][0]: s for s in report.added_sources + report.changed_sources}  # file -> its name
        settings = index.manifest["chunker"]
        chunker = Chunker(settings["chunk_size"], settings["overlap"], index.dense().model.tokenizer,
                          settings.get("text_field", "text"))
        new_chunks = _new_chunks(list(todo), chunker, report, metadata, todo) if todo else []
        if todo and not new_chunks:
            raise _no_text(inputs, report)
        counts = _counts(new_chunks)  # a file without chunks was skipped: the index keeps it as it was, or not at all
        report.added_sources = [s for s in report.added_sources if s in counts]
        report.changed_sources = [s for s in report.changed_sources if s in counts]
        drop = set(report.changed_sources)
        keep = [cid for cid, src in index._db.execute("SELECT id, source FROM chunks ORDER BY row") if src not in drop]
        hashes = {**known, **{name: Source.of(f, fresh[name][1], counts[name]) for f, name in todo.items()
                              if name in counts}}
        return keep, new_chunks, hashes

    return _change(root, plan, embedder, placement)


def delete_from_index(root: str | Path, sources: list[str] | None = None, ids: list[str] | None = None,
                      placement=None) -> ChangeReport:
    """Remove every chunk of the given sources and the given chunk ids."""
    sources, ids = list(sources or []), set(ids or [])

    def plan(index: Index, report: ChangeReport):
        known = index.sources()
        named = _source_names(sources, known)
        missing = [s for s, name in zip(sources, named) if name not in known]
        present = {cid for (cid,) in index._db.execute("SELECT id FROM chunks")}
        unknown_ids = sorted(ids - present)
        if missing or unknown_ids:
            what = [f"sources not in the index: {missing[:3]}"] if missing else []
            what += [f"chunk ids not in the index: {unknown_ids[:3]}"] if unknown_ids else []
            raise DataError(f"{index.root}: {'; '.join(what)}; `ragtune index info` lists what is there")
        report.removed_sources = named
        keep = [cid for cid, src in index._db.execute("SELECT id, source FROM chunks ORDER BY row")
                if src not in named and cid not in ids]
        hashes = {s: rec for s, rec in known.items() if s not in named}
        return keep, [], hashes

    return _change(root, plan, None, placement)


def search(index: Index, query: str, k: int, mode: str = "hybrid") -> Hits:
    """Top-k chunk ids for one query with dense, BM25 or hybrid (the index's fusion settings) retrieval."""
    from ragtune.retrieval.fusion import fuse_one

    depth = max(k, index.config.fusion.depth)
    if mode == "dense":
        return index.dense().search([query], k)[0]
    if mode == "bm25":
        return index.bm25().search([query], k)[0]
    if mode != "hybrid":
        raise DataError(f"unknown retrieval mode '{mode}'; use hybrid, dense or bm25")
    rankings = [index.bm25().search([query], depth)[0], index.dense().search([query], depth)[0]]
    return fuse_one(rankings, index.config.fusion, k)
