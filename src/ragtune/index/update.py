"""Changing an index: build it from documents, add new and changed files (found by content hash), delete
sources or chunks, compact it. Each change writes a new version under the writer lock (see store.py) that costs
what changed: `add` writes one segment of the new chunks and links the others (segments.py), `delete` records
deleted chunk ids, and `compact` rewrites the live chunks as one segment."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragtune.config.retrieval import RetrievalConfig
from ragtune.errors import ConfigError, DataError, OutputError
from ragtune.index.reader import Index, dense_store
from ragtune.index.store import (
    BM25_DIR,
    CHUNK_STORES,
    CHUNKS_DB,
    CURRENT,
    FAISS_FILE,
    FORMAT_VERSION,
    LEFTOVER,
    MANIFEST_FILE,
    PG_PREFIX_FILE,
    SEGMENT_SCHEMA,
    STATE_DB,
    STATE_SCHEMA,
    IndexedFile,
    current_version,
    link_folder,
    read_manifest,
    writer,
)
from ragtune.ingest.chunk import Chunk, Chunker, chunk_files
from ragtune.ingest.documents import source_files
from ragtune.progress import in_slices
from ragtune.utils import output_folder

log = logging.getLogger(__name__)


@dataclass
class ChangeReport:
    added_sources: list[str] = field(default_factory=list)
    changed_sources: list[str] = field(default_factory=list)
    unchanged_sources: list[str] = field(default_factory=list)
    removed_sources: list[str] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    segments_merged: int = 0  # folded into the new segment, or dropped with nothing live left
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _counts(chunks: list[Chunk]) -> dict[str, int]:
    """Chunks per source."""
    counts: dict[str, int] = {}
    for chunk in chunks:
        counts[chunk.source] = counts.get(chunk.source, 0) + 1
    return counts


def _no_text(inputs: list[str], report: ChangeReport) -> DataError:
    return DataError(f"{', '.join(inputs)}: no text to index ({'; '.join(report.warnings[:3])})")


def _embedder_info(name: str, placement, config: RetrievalConfig, max_seq_length: int | None):
    from ragtune.models.fingerprint import model_fingerprint
    from ragtune.models.load import load_embedder
    from ragtune.models.resolve import resolve_model
    from ragtune.retrieval.dense import DenseRetriever

    path = resolve_model(name)
    model = load_embedder(path, placement, max_seq_length, backend=config.backend)
    retriever = DenseRetriever(model, placement, config.dense, path)
    info = {"name": name, "path": str(Path(path).resolve()) if Path(path).exists() else path,
            "fingerprint": model_fingerprint(path), "dimension": model.get_embedding_dimension(),
            "max_seq_length": model.max_seq_length}
    return retriever, info


def _multivector_info(name: str, placement, token_dtype: str):
    """The late-interaction model whose token vectors the index stores, and what the manifest says of it."""
    from ragtune.models.fingerprint import model_fingerprint
    from ragtune.models.load import load_multivector
    from ragtune.models.resolve import resolve_model
    from ragtune.retrieval.maxsim import MaxSimReranker

    path = resolve_model(name)
    scorer = MaxSimReranker(load_multivector(path, placement), placement, name=f"maxsim:{name}")
    info = {"name": name, "path": str(Path(path).resolve()) if Path(path).exists() else path,
            "fingerprint": model_fingerprint(path), "dtype": token_dtype,
            "dimension": scorer.model.get_embedding_dimension()}
    return scorer, info


TOKEN_SLICE = 256  # chunks per counted slice of token-vector encoding


def _clara_info(run: str, placement):
    """The CLaRa run whose memory vectors the index stores (a ClaraGenerator), and what the manifest says of it."""
    from ragtune.clara.generator import ClaraGenerator, clara_folder
    from ragtune.clara.model import CLARA_FILE
    from ragtune.errors import ModelError
    from ragtune.models.fingerprint import model_fingerprint

    folder = clara_folder(run)
    if folder is None:
        raise ModelError(f"--clara {run}: not a CLaRa run (no {CLARA_FILE} in it or in its final/); give a "
                         "`ragtune train clara` run directory")
    generator = ClaraGenerator(str(folder), placement)
    info = {"name": run, "path": str(folder.resolve()), "fingerprint": model_fingerprint(folder), "dtype": "fp16",
            "dimension": generator.hidden_size, "memory_tokens": generator.clara.shape.memory_tokens}
    return generator, info


def _token_vectors(scorer, texts: list[str], dtype: str, dim: int):
    from ragtune.retrieval.maxsim import TokenVectors

    parts = in_slices("Encoding token vectors", texts, TOKEN_SLICE, scorer.encode_documents)
    return TokenVectors.quantize([v for part in parts for v in part], dtype, dim)


def _memory_vectors(generator, texts: list[str], dim: int):
    """The chunks' CLaRa memory vectors, fp16 (hidden states are not unit length, so no int8 scale per row)."""
    from ragtune.retrieval.maxsim import TokenVectors

    parts = in_slices("Compressing chunks (CLaRa)", texts, TOKEN_SLICE, generator.memory_vectors)
    return TokenVectors.quantize([v for part in parts for v in part], "fp16", dim)


def _write_segment(folder: Path, chunks: list[Chunk], vectors: np.ndarray, config: RetrievalConfig,
                   per_chunk: dict | None = None, store=None) -> None:
    """Write one segment: its chunks (rows from 0), their FAISS (or, with a `store`, pgvector) and BM25 indexes,
    and `per_chunk` (TokenVectors in row order, by manifest key: token vectors, CLaRa memory vectors)."""
    import faiss

    from ragtune.retrieval.bm25 import BM25Retriever
    from ragtune.retrieval.dense import build_faiss_index

    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / CHUNKS_DB)
    db.executescript(SEGMENT_SCHEMA)
    db.executemany('INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                   [(c.id, i, c.source, c.title, c.chunk, c.start, c.end, c.page, c.text,
                     json.dumps(c.metadata, ensure_ascii=False)) for i, c in enumerate(chunks)])
    db.commit()
    db.close()
    if store is not None:
        store.write(folder, vectors, config.dense)
    else:
        faiss.write_index(build_faiss_index(vectors, config.dense), str(folder / FAISS_FILE))
    BM25Retriever.build({c.id: c.text for c in chunks}, config.bm25).save(folder / BM25_DIR)
    for key, stored in (per_chunk or {}).items():
        stored.save(folder / CHUNK_STORES[key])


def _write_version(staging: Path, manifest: dict, segments: list[str], sources: dict[str, IndexedFile],
                   deleted: set[tuple[str, str]]) -> None:
    """The version's own files: state.sqlite (indexed files, deleted (segment, chunk id) pairs) and a manifest
    listing its segments, already in `staging`."""
    db = sqlite3.connect(staging / STATE_DB)
    db.executescript(STATE_SCHEMA)
    db.executemany("INSERT INTO sources VALUES (?, ?, ?, ?)",
                   [(s, rec.content_hash, rec.chunks, rec.path) for s, rec in sources.items()])
    db.executemany("INSERT INTO deleted VALUES (?, ?)", sorted(deleted))
    db.commit()
    db.close()
    sizes = {}
    for name in segments:
        seg = sqlite3.connect(staging / name / CHUNKS_DB)
        sizes[name] = seg.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        seg.close()
    manifest = {**manifest, "format_version": FORMAT_VERSION, "segments": segments,
                "chunks": sum(sizes.values()) - len(deleted), "deleted": len(deleted), "sources": len(sources),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for key in (k for k in CHUNK_STORES if k in manifest):
        from ragtune.retrieval.maxsim import TokenVectors

        stored = [TokenVectors.load(staging / name / CHUNK_STORES[key]) for name in segments]
        manifest[key] = {**manifest[key], "tokens": sum(int(t.offsets[-1]) for t in stored),
                         "bytes": sum(t.nbytes for t in stored)}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _new_chunks(files: list[Path], chunker: Chunker, report: ChangeReport, metadata: dict | None = None,
                names: dict[Path, str] | None = None) -> list[Chunk]:
    chunks, warnings = chunk_files(files, chunker, metadata, names)
    report.warnings += warnings
    return chunks


def build_index(out: str | Path, inputs: list[str], embedder: str, config: RetrievalConfig | None = None,
                chunk_size: int | None = None, overlap: int = 32, overwrite: bool = False, placement=None,
                text_field: str = "text", metadata: dict | None = None, multivector: str | None = None,
                token_dtype: str = "int8", pdf_layout: bool = False, backend: str = "faiss",
                uri: str | None = None, clara: str | None = None) -> ChangeReport:
    """Chunk, embed and index every document under `inputs` into a new index at `out`; `metadata` is added to
    every chunk, and `pdf_layout` reads PDF pages as laid out (kept for later `add`s). With `multivector` (a
    late-interaction model), every chunk's token vectors are stored too, as `token_dtype` (int8 or fp16), for MaxSim
    as the second stage. With `clara` (a `ragtune train clara` run), every chunk's memory vectors are stored, so
    that the run answers without compressing at query time. With `backend="pgvector"`, the vectors go to PostgreSQL
    at `uri` (pgvector.py)."""
    from ragtune.models.device import choose_placement

    start = time.perf_counter()
    out, config = output_folder(out), config or RetrievalConfig()
    if (out / CURRENT).exists() and not overwrite:
        raise OutputError(f"{out}: an index exists; pass --overwrite to rebuild it, or use `ragtune index add`")
    if out.exists() and not (out / CURRENT).exists() and any(not LEFTOVER.fullmatch(p.name)
                                                               for p in out.iterdir()):
        raise OutputError(f"{out}: exists and is not a ragtune index; choose an empty or new folder")
    files = source_files(inputs)
    old_backend = _current_backend(out)  # the pgvector tables an --overwrite replaces
    store = _dense_store(out, backend, uri, old_backend)  # a server that cannot be reached fails before any model loads
    placement = placement or choose_placement(config.device, config.precision)
    Chunker(chunk_size or Chunker.chunk_size, overlap)  # a bad size fails before the embedder loads
    retriever, info = _embedder_info(embedder, placement, config, None)
    scorer, late = _multivector_info(multivector, placement, token_dtype) if multivector else (None, None)
    compressor, memory = _clara_info(clara, placement) if clara else (None, None)
    chunker = Chunker.for_embedder(retriever.model, chunk_size, overlap, text_field, pdf_layout)
    report = ChangeReport()
    chunks = _new_chunks(files, chunker, report, metadata)
    if not chunks:
        raise _no_text(inputs, report)
    vectors = retriever.encode_documents([c.text for c in chunks], show_progress=True)
    per_chunk = {}
    if scorer:
        per_chunk["multivector"] = _token_vectors(scorer, [c.text for c in chunks], token_dtype, late["dimension"])
    if compressor:
        per_chunk["clara"] = _memory_vectors(compressor, [c.text for c in chunks], memory["dimension"])
    manifest = {"format_version": FORMAT_VERSION, "embedder": info, "chunker": chunker.settings(),
                "retrieval": json.loads(config.model_dump_json(exclude={"pipelines"})),
                **({"multivector": late} if late else {}), **({"clara": memory} if memory else {}),
                **({"dense_backend": store.manifest()} if store else {})}
    counts = _counts(chunks)
    hashes = {str(f): IndexedFile.of(f, file_hash(f), counts[str(f)]) for f in files if str(f) in counts}  # none skipped
    report.added_sources = list(hashes)
    # with --overwrite, the old version stays live until the new one is complete
    with writer(out, _collect(out, store)) as staging:
        _write_segment(staging / "s000001", chunks, vectors, config, per_chunk, store)
        _write_version(staging, manifest, ["s000001"], hashes, set())
    _drop_moved_tables(out, old_backend, store)
    report.chunks_added = len(chunks)
    report.seconds = time.perf_counter() - start
    return report


def _dense_store(out: Path, backend: str, uri: str | None, old: dict | None):
    """The PgVectorStore of a new pgvector index (an --overwrite onto the same server keeps the old prefix), or
    None."""
    from ragtune.index.pgvector import URI_ENV, PgVectorStore, public_uri

    if backend == "faiss":
        if uri:
            raise ConfigError("--uri is for `--backend pgvector`; a FAISS index keeps its vectors in the index folder")
        return None
    if backend != "pgvector":
        from ragtune.choices import unknown

        raise ConfigError(unknown("backend", backend, ["faiss", "pgvector"]))
    if not (uri or os.environ.get(URI_ENV)):
        raise ConfigError("--backend pgvector needs --uri postgresql://USER@HOST:PORT/DATABASE (or "
                          f"{URI_ENV} set)")
    uri = uri or os.environ[URI_ENV]
    kept = out / PG_PREFIX_FILE  # written before any table, so a build that crashed leaves its prefix behind
    if old:  # the same server keeps its prefix; any other URI (or spelling of it) gets tables of a new one
        prefix = old["prefix"] if public_uri(uri) == old.get("uri") else PgVectorStore.new_prefix()
    else:
        prefix = kept.read_text(encoding="utf-8").strip() if kept.is_file() else PgVectorStore.new_prefix()
    store = PgVectorStore(uri, prefix, explicit=True)
    store.conn  # noqa: B018 - connect now
    out.mkdir(parents=True, exist_ok=True)
    kept.write_text(prefix, encoding="utf-8")  # and the build's own clean-up drops what a crashed one left
    return store


def _current_backend(out: Path) -> dict | None:
    """The pgvector backend that the index at `out` names now (None for FAISS, no index, or a damaged manifest)."""
    try:
        old = read_manifest(current_version(out)).get("dense_backend") if (out / CURRENT).is_file() else None
    except DataError:
        return None
    return old if isinstance(old, dict) and isinstance(old.get("prefix"), str) else None


def _drop_moved_tables(out: Path, old: dict | None, store) -> None:
    """After an --overwrite that moved the vectors off a PostgreSQL server (to FAISS, or to another server), drop
    the old tables there at once: no version names them any more, and no later change would reach that server. A
    server that fails to drop them costs a warning that names what is left."""
    if old is None:
        return
    from ragtune.index.pgvector import RETIRED_FILE, PgVectorStore, public_uri

    if store is not None and store.prefix == old["prefix"]:
        return  # the same server: the writer's own clean-up (_collect) retires them
    moved = None
    try:
        # Off to FAISS, RAGTUNE_PGVECTOR_URI may still reach the old server (with its password); onto another
        # server it names the new one, so the old server is the one the manifest names. The prefixes differ, so
        # the new build's tables are never among these, however the two URIs were spelled.
        moved = PgVectorStore.for_manifest(old) if store is None else PgVectorStore(old["uri"], old["prefix"],
                                                                                   explicit=True)
        dropped = moved.drop_all()
        log.info("%s: dropped %d vector tables of the previous build from %s", out, len(dropped),
                 public_uri(moved.uri))
    except (ConfigError, DataError) as exc:
        log.warning("%s: the previous build's vector tables (%s_*) on %s were not dropped (%s); drop them there by "
                    "hand", out, old["prefix"], public_uri(moved.uri) if moved else old.get("uri"), exc)
    finally:
        if moved is not None:
            moved.close()
    if store is None:  # a FAISS index now: nothing of the pgvector build is left in the folder
        for leftover in (PG_PREFIX_FILE, RETIRED_FILE):
            (out / leftover).unlink(missing_ok=True)


def _collect(root: Path, store):
    """What runs after a change, under the writer lock: the tables of a pgvector index that no version names any
    more are dropped. The change has landed by then, so a failure here only warns; the next change retries."""
    if store is None:
        return None

    def collect() -> None:
        try:
            store.keep_only(root)
        except DataError as exc:
            log.warning("%s: old vector tables not dropped yet (%s); a later change drops them", root, exc)
        finally:
            store.close()
    return collect


def _encode_new(index: Index, chunks: list[Chunk]):
    """Vectors of new chunks, and what else the index stores per chunk (token vectors, CLaRa memory vectors), by
    the index's own models."""
    texts = [c.text for c in chunks]
    vectors = index.dense().encode_documents(texts, show_progress=True)
    per_chunk = {}
    if late := index.manifest.get("multivector"):
        per_chunk["multivector"] = _token_vectors(index.maxsim(), texts, late["dtype"], late["dimension"])
    if memory := index.manifest.get("clara"):
        per_chunk["clara"] = _memory_vectors(index.clara(), texts, memory["dimension"])
    return np.ascontiguousarray(vectors, dtype=np.float32), per_chunk


def _write_merged(index: Index, folder: Path, keep: list[str], new_chunks: list[Chunk]) -> None:
    """One segment of the kept chunks (their stored vectors, token and memory vectors, read back) and the new ones
    (encoded): a new segment, a merge of small ones, a compaction, or the first change of a format-1 index."""
    from ragtune.retrieval.maxsim import TokenVectors

    # a merge of small segments reads only their rows, not every id of the big one
    rows = index.rows() if len(keep) > index.size // 2 else index.rows_of(keep)
    kept = index.chunks(keep)
    vectors, per_chunk = _encode_new(index, new_chunks) if new_chunks else (None, {})
    old = index.vectors([rows[c.id] for c in kept])
    all_vectors = np.ascontiguousarray(np.vstack([old, vectors]) if vectors is not None else old, dtype=np.float32)
    for key in (k for k in CHUNK_STORES if k in index.manifest and kept):
        per_chunk[key] = TokenVectors.concat([index.stored(key).take([rows[c.id] for c in kept]),
                                              *([per_chunk[key]] if key in per_chunk else [])])
    _write_segment(folder, kept + new_chunks, all_vectors, index.config, per_chunk, index.store)


MAX_SEGMENTS = 8  # an `add` past this many folds the smallest segments into its new one (a tiered merge)


def _to_merge(index: Index, removed: set[tuple[str, str]], adding: bool) -> list[str]:
    """The segments that this change writes anew (with the added chunks) rather than links: the smallest ones,
    by live chunks, where an add would leave more than MAX_SEGMENTS; any change drops a segment with nothing
    live left, which costs nothing. So an add costs its own chunks plus the small segments', never the big one's."""
    live = {seg.folder.name: seg.size - len(seg.deleted) - sum(1 for s, _ in removed if s == seg.folder.name)
            for seg in index.segments}
    empty = [name for name, n in live.items() if n == 0]
    rest = sorted((n, name) for name, n in live.items() if n > 0)
    fold = len(rest) + 1 - MAX_SEGMENTS if adding else 0  # so that MAX_SEGMENTS remain with the new one
    return empty + [name for _, name in rest[:max(0, fold)]]


def _change(root: str | Path, plan, embedder: str | None, placement) -> ChangeReport:
    """Apply `plan(index, report) -> (removed chunk ids, new chunks, source hashes)` as a new version: the old
    segments linked, the new chunks in one new segment, the removed ones recorded as deleted."""
    start = time.perf_counter()
    root = Path(root)
    folder = current_version(root)  # not an index: say so before the writer lock creates anything there
    store = dense_store(folder, read_manifest(folder))  # its tables' prefix never changes
    with writer(root, _collect(root, store)) as staging:
        index = Index(root, placement, embedder, preload=False)  # a delete reads no vectors
        for key in (k for k in CHUNK_STORES if k in index.manifest):
            index.stored(key)  # memory-mapped: a missing or damaged store is one line before anything is written
        report = ChangeReport()
        removed, new_chunks, hashes = plan(index, report)
        where = index.locate(removed)
        if index.size - len(where) + len(new_chunks) == 0:
            raise DataError(f"{root}: the change would leave the index empty; delete the folder instead")
        if not index.segmented:  # format 1: rewritten once as format 2
            gone = set(removed)
            _write_merged(index, staging / "s000001", [i for i in index.ids() if i not in gone], new_chunks)
            _write_version(staging, index.manifest, ["s000001"], hashes, set())
        else:
            deleted = {(seg.folder.name, i) for seg in index.segments for i in seg.deleted} | set(where)
            merged = _to_merge(index, set(where), bool(new_chunks))
            names = [seg.folder.name for seg in index.segments]
            for name in names:
                if name not in merged:
                    link_folder(index.folder / name, staging / name)
            if new_chunks:
                fold = [i for seg in index.segments if seg.folder.name in merged for i in seg.ids()
                        if (seg.folder.name, i) not in deleted]
                new_name = f"s{max(int(n[1:]) for n in names) + 1:06d}"
                _write_merged(index, staging / new_name, fold, new_chunks)
                names.append(new_name)
            report.segments_merged = len(merged)
            names = [n for n in names if n not in merged]
            deleted = {(s, i) for s, i in deleted if s not in merged}
            _write_version(staging, index.manifest, names, hashes, deleted)
        report.chunks_added, report.chunks_removed = len(new_chunks), len(where)
        index.close()
    report.seconds = time.perf_counter() - start
    return report


def compact_index(root: str | Path, placement=None) -> ChangeReport:
    """Rewrite the live chunks as one segment (no model runs: vectors and token vectors are read back), dropping
    the deleted ones for good; BM25's term statistics are then the whole index's again."""
    start = time.perf_counter()
    root = Path(root)
    folder = current_version(root)
    store = dense_store(folder, read_manifest(folder))
    with writer(root, _collect(root, store)) as staging:
        index = Index(root, placement, preload=False)
        report = ChangeReport(chunks_removed=index.deleted)
        _write_merged(index, staging / "s000001", index.ids(), [])
        _write_version(staging, index.manifest, ["s000001"], index.sources(), set())
        index.close()
    report.seconds = time.perf_counter() - start
    return report


def _source_names(paths: list[str], known: dict[str, IndexedFile]) -> list[str]:
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
                          settings.get("text_field", "text"), settings.get("pdf_layout", False))
        new_chunks = _new_chunks(list(todo), chunker, report, metadata, todo) if todo else []
        if todo and not new_chunks:
            raise _no_text(inputs, report)
        counts = _counts(new_chunks)  # a file without chunks was skipped: the index keeps it as it was, or not at all
        report.added_sources = [s for s in report.added_sources if s in counts]
        report.changed_sources = [s for s in report.changed_sources if s in counts]
        removed = index.ids_of_sources(report.changed_sources)
        hashes = {**known, **{name: IndexedFile.of(f, fresh[name][1], counts[name]) for f, name in todo.items()
                              if name in counts}}
        return removed, new_chunks, hashes

    return _change(root, plan, embedder, placement)


def delete_from_index(root: str | Path, sources: list[str] | None = None, ids: list[str] | None = None,
                      placement=None) -> ChangeReport:
    """Remove every chunk of the given sources and the given chunk ids."""
    sources, ids = list(sources or []), set(ids or [])

    def plan(index: Index, report: ChangeReport):
        known = index.sources()
        named = _source_names(sources, known)
        missing = [s for s, name in zip(sources, named) if name not in known]
        unknown_ids = sorted(ids - {i for _, i in index.locate(sorted(ids))})
        if missing or unknown_ids:
            what = [f"sources not in the index: {missing[:3]}"] if missing else []
            what += [f"chunk ids not in the index: {unknown_ids[:3]}"] if unknown_ids else []
            raise DataError(f"{index.root}: {'; '.join(what)}; `ragtune index info` lists what is there")
        report.removed_sources = named
        hashes = {s: rec for s, rec in known.items() if s not in named}
        return sorted(set(index.ids_of_sources(named)) | ids), [], hashes

    return _change(root, plan, None, placement)
