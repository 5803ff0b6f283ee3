"""Reading an index: its chunks, sources and vectors, and its BM25 and dense first stages over every segment, as
one retrieval pipeline (the same spec pipeline as `eval retrieval`) with an optional reranker."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ragtune.errors import DataError, ModelError, where
from ragtune.index.segments import Segment, SegmentedBM25, SegmentedTokens
from ragtune.index.store import (
    BM25_DIR,
    CHUNK_STORES,
    CHUNKS_DB,
    FAISS_FILE,
    MANIFEST_FILE,
    REBUILD,
    STATE_DB,
    IndexedFile,
    current_version,
    damaged,
    open_db,
    read_manifest,
    retrieval_config,
)
from ragtune.ingest.chunk import Chunk
from ragtune.retrieval.base import Hits

log = logging.getLogger(__name__)


def dense_store(folder: Path, manifest: dict):
    """Where a version's dense vectors live when not in FAISS files: a PgVectorStore (pgvector.py), else None."""
    backend = manifest.get("dense_backend")
    if backend is None:
        return None
    if not isinstance(backend, dict) or backend.get("name") != "pgvector" or \
            not all(isinstance(backend.get(key), str) for key in ("uri", "prefix")):
        raise damaged(where(folder / MANIFEST_FILE, field="dense_backend"),
                      f'should be {{"name": "pgvector", "uri": ..., "prefix": ...}}, not {json.dumps(backend)}')
    from ragtune.index.pgvector import PgVectorStore

    return PgVectorStore.for_manifest(backend)


class ChunkTexts(Mapping):
    """chunk id -> text of the live chunks, read from the segments' databases on demand."""

    def __init__(self, index: "Index"):
        self._index = index

    def __getitem__(self, chunk_id: str) -> str:
        for seg in self._index.segments:
            row = seg.db.execute("SELECT text FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
            if row is not None and chunk_id not in seg.deleted:
                return row[0]
        raise KeyError(chunk_id)

    def __iter__(self):
        return iter(self._index.ids())

    def __len__(self) -> int:
        return self._index.size


class Index:
    """Open an index folder for queries; `build`, `add` and `delete` write new versions."""

    def __init__(self, root: str | Path, placement=None, embedder: str | None = None, model=None,
                 preload: bool = True):
        """`model` is the index's embedder, already loaded (a server shares one across index versions). `preload`
        reads every FAISS, BM25 and token file now, so that a long-lived reader never finds them removed by later
        writes (only the live and the previous version are kept); a writer, which holds the lock, reads them only
        when it needs them."""
        self.root = Path(root)
        self._model = model
        self.folder = current_version(self.root)
        self.manifest = read_manifest(self.folder)
        self._placement = placement  # chosen when a model first loads: BM25 and `index info` need no torch
        self._embedder_path: str | None = None
        self._check_embedder(embedder)
        self.config = retrieval_config(self.folder, self.manifest)
        self.segments, self._state = self._open_segments()
        self.store = dense_store(self.folder, self.manifest)
        self._dense = self._bm25 = self._maxsim = self._clara = None
        self._stored: dict[str, SegmentedTokens] = {}  # per-chunk vectors by manifest key (CHUNK_STORES)
        self._matches: dict[str, frozenset[str]] = {}  # a filter's chunk ids, for the last few filters asked
        self._faiss = None
        if preload:
            self.indexes()
            self.bm25()
            for key in CHUNK_STORES:
                if key in self.manifest:
                    self.stored(key)

    @property
    def segmented(self) -> bool:
        """Format 2 (segments in subfolders, sources and deletions in state.sqlite); format 1 is one folder."""
        return "segments" in self.manifest

    def _open_segments(self) -> tuple[list[Segment], object]:
        if not self.segmented:  # format 1: the version folder is the one segment, and holds the sources
            db = open_db(self.folder / CHUNKS_DB)
            return [Segment(self.folder, db, 0, db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])], db
        state = open_db(self.folder / STATE_DB, ("sources", "deleted"))
        deleted: dict[str, set[str]] = {}
        for segment, chunk_id in state.execute("SELECT segment, id FROM deleted"):
            deleted.setdefault(segment, set()).add(chunk_id)
        segments, offset = [], 0
        for name in self.manifest["segments"]:
            folder = self.folder / str(name)
            db = open_db(folder / CHUNKS_DB, ("chunks",))
            size = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            segments.append(Segment(folder, db, offset, size, frozenset(deleted.get(str(name), ()))))
            offset += size
        return segments, state

    @property
    def placement(self):
        if self._placement is None:
            from ragtune.models.device import choose_placement

            self._placement = choose_placement()
        return self._placement

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

    def _check_weights(self, info: dict, what: str = "embedder") -> None:
        """Refuse a model whose weights changed since the build (say, retrained into the same folder)."""
        from ragtune.models.fingerprint import model_fingerprint

        now = model_fingerprint(info["path"])
        if now is not None and info.get("fingerprint") and now != info["fingerprint"]:
            raise ModelError(f"{self.root}: the {what} at {info['path']} has changed since this index was built "
                             "(its weights differ), so new vectors would not match the stored ones; rebuild with "
                             "`ragtune index build --overwrite`, or put the original model back at that path")

    # ------------------------------------------------------------------------------------------------ reading
    @property
    def size(self) -> int:
        """Live chunks: every segment's, less the deleted ones."""
        return sum(seg.size - len(seg.deleted) for seg in self.segments)

    @property
    def deleted(self) -> int:
        return sum(len(seg.deleted) for seg in self.segments)

    def _read_faiss(self, path: Path, size: int):
        import faiss

        if not path.is_file():
            raise damaged(path, "missing")
        try:
            loaded = faiss.read_index(str(path))
        except RuntimeError:
            raise damaged(path, "not a readable FAISS index (damaged or not written by ragtune)") from None
        if loaded.d != self.manifest["embedder"]["dimension"]:
            raise damaged(path, f"holds {loaded.d}-dimensional vectors, but manifest.json says "
                                f"{self.manifest['embedder']['dimension']}")
        if loaded.ntotal != size:
            raise damaged(path, f"holds {loaded.ntotal} vectors, but its chunks.sqlite has {size} chunks")
        if hasattr(loaded, "make_direct_map"):  # IVF: allow reconstructing vectors by row
            loaded.make_direct_map()
        return loaded

    def indexes(self) -> list:
        """Every segment's FAISS index, read from disk once (or its pgvector table, opened)."""
        if self._faiss is None:
            if self.store is not None:
                self._faiss = [self.store.open(seg.folder, seg.size, self.config.dense) for seg in self.segments]
                for seg, table in zip(self.segments, self._faiss):
                    if table.d != self.manifest["embedder"]["dimension"]:
                        raise damaged(seg.folder, f"its table {table.table} holds {table.d}-dimensional vectors, but "
                                                  f"manifest.json says {self.manifest['embedder']['dimension']}")
            else:
                self._faiss = [self._read_faiss(seg.folder / FAISS_FILE, seg.size) for seg in self.segments]
        return self._faiss

    def faiss(self):
        """One FAISS index of the live chunks in the order of `ids()` (what LangChain's FAISS store loads): the
        segment's own where there is one segment and nothing deleted, else a flat index of their vectors."""
        if len(self.segments) == 1 and not self.deleted and self.store is None:
            return self.indexes()[0]
        import faiss

        rows = self.rows()
        flat = faiss.IndexFlatIP(self.manifest["embedder"]["dimension"])
        flat.add(self.vectors([rows[i] for i in self.ids()]))
        return flat

    def vectors(self, rows: list[int]) -> np.ndarray:
        """Vectors by global row, in the order asked."""
        out = np.zeros((len(rows), self.manifest["embedder"]["dimension"]), dtype=np.float32)
        wanted = np.asarray(rows, dtype=np.int64)
        for seg, index in zip(self.segments, self.indexes()):
            mine = np.flatnonzero((wanted >= seg.offset) & (wanted < seg.offset + seg.size))
            if len(mine):
                out[mine] = index.reconstruct_batch(wanted[mine] - seg.offset)
        return out

    def dense(self):
        if self._dense is None:
            from ragtune.models.load import load_embedder

            info = self.manifest["embedder"]
            path = self._embedder_path or info["path"]
            if self._embedder_path is None:
                self._check_weights(info)
            model = self._model or load_embedder(path, self.placement, info.get("max_seq_length"),
                                                 backend=self.config.backend)
            from ragtune.index.dense_segments import SegmentedDense

            self._dense = SegmentedDense(model, self.placement, self.config.dense, path, self.segments,
                                         self.indexes())
        return self._dense

    def _read_bm25(self, folder: Path):
        from ragtune.retrieval.bm25 import BM25Retriever

        try:
            return BM25Retriever.load(folder)
        except DataError as exc:
            raise DataError(f"{exc}; {REBUILD}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise damaged(folder, f"not a readable BM25 index ({' '.join(str(exc).split())})") from None

    def bm25(self):
        if self._bm25 is None:
            self._bm25 = SegmentedBM25(self.segments, [self._read_bm25(seg.folder / BM25_DIR)
                                                       for seg in self.segments])
        return self._bm25

    def stored(self, key: str) -> SegmentedTokens:
        """The chunks' stored vectors of `key` (CHUNK_STORES: 'multivector' token vectors, 'clara' memory vectors),
        in row order, memory-mapped; a DataError where the index has none."""
        if key not in self._stored:
            if key not in self.manifest:
                what, flag = {"multivector": ("token vectors, so MaxSim cannot score it", "--multivector MODEL"),
                              "clara": ("CLaRa memory vectors", "--clara RUN")}[key]
                raise DataError(f"{self.root}: this index stores no {what}; rebuild it with `ragtune index build "
                                f"{flag}`")
            self._stored[key] = SegmentedTokens(self.segments, [self._read_stored(seg, key) for seg in self.segments])
        return self._stored[key]

    def _read_stored(self, seg: Segment, key: str):
        from ragtune.retrieval.maxsim import TokenVectors

        folder = seg.folder / CHUNK_STORES[key]
        if not folder.is_dir():
            raise damaged(folder, "missing")
        try:
            vectors = TokenVectors.load(folder)
        except (OSError, ValueError, KeyError) as exc:
            raise damaged(folder, f"not readable stored vectors ({' '.join(str(exc).split())})") from None
        if len(vectors) != seg.size:
            raise damaged(folder, f"holds vectors for {len(vectors)} chunks, but the index has {seg.size}")
        return vectors

    def clara(self):
        """The CLaRa run whose memory vectors the index stores (a ClaraGenerator), for the chunks an `add` brings;
        refused where its weights changed since the build."""
        if self._clara is None:
            from ragtune.clara.generator import ClaraGenerator, clara_folder

            info = self.manifest["clara"]
            if clara_folder(info["path"]) is None:
                raise ModelError(f"{self.root}: the CLaRa run this index was built with is gone from {info['path']}; "
                                 "put it back there, or rebuild with `ragtune index build --clara RUN`")
            self._check_weights(info, "CLaRa run")
            self._clara = ClaraGenerator(info["path"], self.placement)
        return self._clara

    def memory_for(self, generator, ids: list[str]):
        """The stored memory vectors of chunks `ids`, (len(ids), memory_tokens, hidden) as a float32 tensor, where
        this index was built with `generator`'s CLaRa run (the same weights); else None, and it compresses them."""
        from ragtune.models.fingerprint import model_fingerprint

        info = self.manifest.get("clara")
        if not ids or info is None or info.get("fingerprint") != model_fingerprint(generator.folder):
            return None
        import torch

        rows, stored = self.rows_of(ids), self.stored("clara")
        return torch.from_numpy(np.stack([stored.get(rows[i]) for i in ids]))

    def maxsim(self, model=None):
        """MaxSim over the stored token vectors, with the index's late-interaction model for the queries (`model`:
        that model, already loaded, as a server shares it across index versions)."""
        if self._maxsim is None:
            from ragtune.models.load import load_multivector
            from ragtune.retrieval.maxsim import MaxSimReranker

            store = self.stored("multivector")
            info = self.manifest["multivector"]
            if model is None:
                self._check_weights(info)
            self._maxsim = MaxSimReranker(model or load_multivector(info["path"], self.placement), self.placement, store,
                                          self.rows(), f"maxsim:{info['name']}", self.config.dense.batch_size,
                                          self.config.rerank)
        return self._maxsim

    def second_stage(self, name: str, max_length: int | None = None):
        """The reranker called `name`: `maxsim` (the index's stored token vectors and their model) or a
        cross-encoder by name or path, with the index's rerank settings and pairs cut to `max_length` tokens."""
        if name == "maxsim":
            return self.maxsim()
        from ragtune.models.load import load_cross_encoder
        from ragtune.retrieval.rerank import Reranker

        settings = self.config.rerank.model_copy(update={"max_length": max_length} if max_length else {})
        return Reranker(load_cross_encoder(name, self.placement, backend=self.config.backend), self.placement, settings,
                        name=f"rerank:{name}")

    def chunks(self, ids: list[str]) -> list[Chunk]:
        """Live chunks by id, in the order asked."""
        if not ids:
            return []
        found = {}
        for seg in self.segments:
            for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
                part = ids[start:start + 900]
                rows = seg.db.execute(f'SELECT id, text, source, title, chunk, start, "end", page, metadata FROM '
                                      f'chunks WHERE id IN ({",".join("?" * len(part))})', part).fetchall()
                found.update({r[0]: Chunk(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]))
                              for r in rows if r[0] not in seg.deleted})
        return [found[i] for i in ids if i in found]

    def sources(self) -> dict[str, IndexedFile]:
        """Every indexed file by the name it was indexed under."""
        if "path" in {column for _, column, *_ in self._state.execute("PRAGMA table_info(sources)")}:
            rows = self._state.execute("SELECT source, content_hash, chunks, path FROM sources").fetchall()
        else:  # written before paths were stored: relative names resolve from the working directory
            rows = [(s, h, n, str(Path(s).resolve()))
                    for s, h, n in self._state.execute("SELECT source, content_hash, chunks FROM sources")]
        return {s: IndexedFile(h, n, p) for s, h, n, p in rows}

    def _live_rows(self, columns: str):
        """(global row, *columns) of every live chunk, in row order; the first column must be the id."""
        for seg in self.segments:
            for row, *rest in seg.db.execute(f"SELECT row, {columns} FROM chunks ORDER BY row"):
                if rest[0] not in seg.deleted:
                    yield (seg.offset + row, *rest)

    def texts(self) -> dict[str, str]:
        return {i: t for _, i, t in self._live_rows("id, text")}

    def ids(self) -> list[str]:
        """Live chunk ids in row order."""
        return [i for _, i in self._live_rows("id")]

    def rows(self) -> dict[str, int]:
        """Each live chunk id's global row, the position of its vector."""
        return {i: row for row, i in self._live_rows("id")}

    def id_sources(self) -> list[tuple[str, str]]:
        """(chunk id, source) of the live chunks in row order."""
        return [(i, s) for _, i, s in self._live_rows("id, source")]

    def matching(self, where) -> frozenset[str] | None:
        """Ids of the chunks that a metadata filter keeps (a Filter, a LangChain filter dict or --where strings);
        None for no filter. The last 32 filters' answers are kept: a version's chunks never change."""
        from ragtune.retrieval.filters import matching_ids, parse_filter

        parsed = parse_filter(where)
        if parsed is None:
            return None
        key = json.dumps(parsed.to_dict(), sort_keys=True, default=str)
        if key not in self._matches:
            if len(self._matches) >= 32:
                self._matches.pop(next(iter(self._matches)))
            self._matches[key] = frozenset().union(*(matching_ids(seg.db, parsed) - seg.deleted
                                                     for seg in self.segments))
        return self._matches[key]

    def _by(self, column: str, values: list[str]) -> list[tuple[str, str, int]]:
        """(segment name, chunk id, global row) of the live chunks whose `column` (id or source) is one of
        `values`, through that column's index."""
        out = []
        for seg in self.segments:
            for start in range(0, len(values), 900):  # SQLite's limit on bound parameters
                part = values[start:start + 900]
                out += [(seg.folder.name, i, seg.offset + row) for i, row in seg.db.execute(
                    f"SELECT id, row FROM chunks WHERE {column} IN ({','.join('?' * len(part))})", part)
                    if i not in seg.deleted]
        return out

    def locate(self, ids: list[str]) -> list[tuple[str, str]]:
        """(segment name, chunk id) of each of `ids` that the index holds (live)."""
        return [(name, i) for name, i, _ in self._by("id", list(ids))]

    def rows_of(self, ids: list[str]) -> dict[str, int]:
        """The global rows of some live chunks (`rows()` for a few, without reading every id)."""
        return {i: row for _, i, row in self._by("id", list(ids))}

    def ids_of_sources(self, sources: list[str]) -> list[str]:
        """The live chunk ids of the given sources (by their indexed names), through the source column's index."""
        return [i for _, i, _ in self._by("source", list(sources))]

    def text_lookup(self) -> ChunkTexts:
        """Chunk texts by id, read from the databases as they are asked for (a reranker reads its top k only)."""
        return ChunkTexts(self)

    def first_stage(self, name: str = "hybrid", dense=None):
        """The index's first stage: bm25, dense (the index's embedder) or hybrid (both, fused with the index's
        fusion settings): the retrievers `eval retrieval` builds, over this index's files. `dense` stands in for
        the dense retriever (a server passes one whose query vectors were computed in a batch)."""
        from ragtune.retrieval.pipeline import HybridRetriever

        def dense_stage():
            return dense or self.dense()

        stages = {"bm25": self.bm25, "dense": dense_stage,
                  "hybrid": lambda: HybridRetriever([self.bm25(), dense_stage()], self.config.fusion, "hybrid")}
        if name not in stages:
            from ragtune.choices import unknown
            from ragtune.errors import ConfigError

            raise ConfigError(unknown("first_stage", name, stages))
        return stages[name]()

    def pipeline(self, first_stage: str = "hybrid", reranker=None, rerank_k: int | None = None, dense=None):
        """The first stage, then the reranker (if any) over its top `rerank_k`: a retrieval Pipeline."""
        from ragtune.retrieval.pipeline import Pipeline
        from ragtune.retrieval.spec import Spec

        spec = Spec(first_stage, text=first_stage + (f"+{reranker.name}@{rerank_k}" if reranker else ""))
        return Pipeline(spec, self.first_stage(first_stage, dense), self.text_lookup(), reranker,
                        rerank_k or self.config.rerank_k)

    def search(self, query: str, k: int, first_stage: str = "hybrid", where=None) -> Hits:
        """The top k chunk ids (and scores) of one query from the first stage alone, of the chunks that `where`
        (a metadata filter) keeps."""
        return self.pipeline(first_stage).search([query], k, self.matching(where))[0]

    def info(self) -> dict:
        sources = self._state.execute("SELECT COUNT(*) FROM sources").fetchone()[0]
        size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        return {"path": str(self.root), "version": self.folder.name, "format_version": self.manifest["format_version"],
                "embedder": self.manifest["embedder"]["name"], "dimension": self.manifest["embedder"]["dimension"],
                "chunker": self.manifest["chunker"], "sources": sources, "chunks": self.size, "bytes": size,
                "segments": len(self.segments), "deleted": self.deleted,
                "dense_backend": "faiss" if self.store is None else self.store.manifest(),
                **({"pgvector_bytes": self.store.bytes()} if self.store is not None else {}),
                "updated": self.manifest.get("updated"),
                **{key: self.manifest[key] for key in CHUNK_STORES if key in self.manifest}}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        for seg in self.segments:
            seg.db.close()
        if self.segmented:
            self._state.close()
