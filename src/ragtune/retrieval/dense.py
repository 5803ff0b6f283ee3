"""Dense retrieval: length-sorted, reduced-precision encoding, an on-disk embedding cache and a FAISS index."""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
import weakref
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ragtune.config.retrieval import DenseSection
from ragtune.errors import DataError
from ragtune.models.device import Placement, settle
from ragtune.models.fingerprint import model_fingerprint
from ragtune.models.onnx_backend import backend_of
from ragtune.progress import in_slices
from ragtune.retrieval.base import Allowed, Hits, check_corpus, clamp_k, positions, row_mask, texts_fingerprint
from ragtune.retrieval.cache import EmbeddingCache

log = logging.getLogger(__name__)


def reduced_precision_copy(model, placement: Placement):
    """The module to run inference with, and the context to run it in.

    On CPU a bf16 copy of the weights beats autocast (no per-call casts: 2.6x against 2.0x over fp32 for MiniLM
    on an AVX512-BF16 CPU, same NDCG@10 to three decimals); on GPUs autocast is as fast and needs no second copy.
    Where `auto` left a CPU's precision open, the faster one for this model is measured first (`settle`). The copy
    is made once per model and kept until its weights change: copying MiniLM took 140 ms, ten times the encoding
    of one query. In-place updates bump the weights' versions, but a fused optimizer step (transformers' default
    `adamw_torch_fused`) does not, so the evaluators that run during training call `forget_copy` first.
    """
    if backend_of(model) != "torch":  # ONNX Runtime runs the export's own precision
        return model, nullcontext()
    versions = tuple(p._version for p in model.parameters())
    with _COPIES_LOCK:
        kept = _COPIES.get(model)
        if kept is not None and kept[0] == (placement, versions):
            return kept[1]
    settled = settle(placement, model, "rerank" if is_cross_encoder(model) else "encode")
    if settled.device != "cpu" or settled.precision == "fp32":
        runner = model, settled.autocast()
    else:
        copy_ = copy.deepcopy(model)
        copy_.__dict__.pop("forward", None)  # drop training-time forward wrappers bound to the original
        runner = copy_.to(settled.dtype), nullcontext()
    with _COPIES_LOCK:
        _COPIES[model] = ((placement, versions), runner)
    return runner


_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> ((placement, weight versions), runner)
_COPIES_LOCK = threading.Lock()


def forget_copy(model) -> None:
    """Drop the kept reduced-precision copy of `model`: its weights changed in a way their versions may not show."""
    with _COPIES_LOCK:
        _COPIES.pop(model, None)


def is_cross_encoder(model) -> bool:
    return type(model).__name__ == "CrossEncoder"


def unit_vectors(model) -> bool:
    """Whether a model's embeddings are compared as unit vectors (cosine, the default) rather than by raw dot
    product: a model trained for dot product ranks by vector length too, so its vectors stay as they are."""
    return getattr(model, "similarity_fn_name", None) not in ("dot", "dot_product")


PROGRESS_BATCHES = 16  # batches per counted slice when encoding shows progress


def encode(model, texts: list[str], placement: Placement, batch_size: int | None = None, prompt: str | None = None,
           show_progress: bool = False) -> np.ndarray:
    """Float32 embeddings, (n, dim), unit-normalised unless the model scores by dot product. Texts go longest first
    in batches, in reduced precision."""
    if not texts:
        return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
    encoder, context = reduced_precision_copy(model, placement)
    size = batch_size or placement.encode_batch_size

    def run(part: list[str]) -> np.ndarray:
        with context:
            embeddings = encoder.encode(part, batch_size=size, prompt=prompt, normalize_embeddings=unit_vectors(model),
                                        convert_to_tensor=True, show_progress_bar=False)
        return embeddings.float().cpu().numpy()

    if not show_progress or len(texts) <= size * PROGRESS_BATCHES:
        return np.ascontiguousarray(run(texts), dtype=np.float32)
    # Longest first over the whole list (as sentence-transformers orders one call), counted a slice at a time.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    parts = in_slices("Encoding", order, size * PROGRESS_BATCHES, lambda rows: run([texts[i] for i in rows]))
    out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
    out[order] = np.concatenate(parts)
    return out


def model_prompts(model, settings: DenseSection) -> tuple[str | None, str | None]:
    """Query and document prefixes: the config's, else the model's own (config_sentence_transformers.json)."""
    own = getattr(model, "prompts", None) or {}
    query = settings.prompts.query if settings.prompts.query is not None else own.get("query")
    document = settings.prompts.document if settings.prompts.document is not None else (
        own.get("document") or own.get("passage"))
    return query, document


def build_faiss_index(embeddings: np.ndarray, settings: DenseSection):
    """An inner-product FAISS index (over unit vectors for cosine models): exact (flat), HNSW or IVF."""
    import faiss

    n, dim = embeddings.shape
    if settings.index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = settings.hnsw_ef_search
    elif settings.index == "ivf":
        # never more cells than 4*sqrt(n): an index's small segment (a day's `add`) with the big segment's
        # ivf_nlist would put about one vector in each cell, and nprobe cells would hold too few of them
        nlist = max(1, min(settings.ivf_nlist or n, int(4 * math.sqrt(n)), n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
        index.nprobe = min(settings.ivf_nprobe, nlist)
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(embeddings)
    if hasattr(index, "make_direct_map"):  # IVF: vectors can be read back by row (a filtered search needs them)
        index.make_direct_map()
    return index


EXACT_FILTERED_ROWS = 4096  # a filter that keeps at most this many rows is searched exactly, even on HNSW or IVF


def search(query_embeddings: np.ndarray, doc_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with FAISS; returns (scores, indices), each (n_queries, k)."""
    import faiss

    index = faiss.IndexFlatIP(doc_embeddings.shape[1])
    index.add(doc_embeddings)
    return index.search(query_embeddings, min(k, doc_embeddings.shape[0]))


class DenseRetriever:
    """A sentence-transformers model over a FAISS index of the corpus."""

    def __init__(self, model, placement: Placement, settings: DenseSection | None = None,
                 model_path: str | None = None, name: str = "dense", index=None, doc_ids: list[str] | None = None):
        """`index` is a FAISS index whose row i is the vector of `doc_ids[i]` (`build` makes both)."""
        self.model, self.placement = model, placement
        self.settings = settings or DenseSection()
        self.model_path, self.name = model_path, name
        self.query_prompt, self.document_prompt = model_prompts(model, self.settings)
        self.doc_ids: list[str] = list(doc_ids or [])
        self.index = index
        self._rows: dict = {}  # the row of each document id, built at the first filtered search (base.positions)

    def _cache_key(self, texts: list[str], model_path: str | None = None) -> str | None:
        """The cache key of `texts` encoded by the model saved at `model_path` (default: this retriever's)."""
        model_path = model_path or self.model_path
        fingerprint = model_fingerprint(model_path) if model_path else None
        if fingerprint is None:
            return None
        backend = backend_of(self.model)  # torch keys stay as they were before ONNX existed
        return texts_fingerprint(texts, fingerprint, self.document_prompt, self.model.max_seq_length,
                                 self.placement.precision, "normalized" if unit_vectors(self.model) else "raw",
                                 *(() if backend == "torch" else (backend,)))

    def encode_documents(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        key = self._cache_key(texts) if self.settings.cache else None
        cache = EmbeddingCache() if key else None
        if cache is not None:
            cached = cache.get(key, len(texts))
            if cached is not None:
                log.info("document embeddings for %d texts loaded from the cache", len(texts))
                return cached
        embeddings = encode(self.model, texts, self.placement, self.settings.batch_size, self.document_prompt,
                            show_progress)
        if cache is not None:
            cache.put(key, embeddings)
        return embeddings

    def cache_as(self, model_path: str, texts: list[str]) -> bool:
        """Put this index's document vectors (of `texts`, in order) into the on-disk cache as those of the model
        saved at `model_path`: for a model evaluated in memory and then saved unchanged, so that the next
        retriever over the saved folder does not encode the corpus again. False when it has no cache key."""
        key = self._cache_key(texts, model_path)
        if key is None or self.index is None or self.index.ntotal != len(texts):
            return False
        EmbeddingCache().put(key, self.index.reconstruct_n(0, self.index.ntotal))
        return True

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        encoder, context = reduced_precision_copy(self.model, self.placement)
        with context:
            batch_size = self.settings.batch_size or self.placement.encode_batch_size
            embeddings = encoder.encode(texts, batch_size=batch_size, prompt=self.query_prompt,
                                        normalize_embeddings=unit_vectors(self.model), convert_to_tensor=True,
                                        show_progress_bar=False)
        return np.ascontiguousarray(embeddings.float().cpu().numpy(), dtype=np.float32)

    @classmethod
    def build(cls, corpus: dict[str, str], model, placement: Placement, settings: DenseSection | None = None,
              model_path: str | None = None, name: str = "dense", show_progress: bool = False) -> DenseRetriever:
        check_corpus(corpus)
        encoder = cls(model, placement, settings, model_path, name)
        embeddings = encoder.encode_documents([corpus[d] for d in corpus], show_progress)
        return cls(model, placement, settings, model_path, name, build_faiss_index(embeddings, encoder.settings),
                   list(corpus))

    def search(self, queries: list[str], k: int, allowed: Allowed = None) -> list[Hits]:
        return self.search_embeddings(self.encode_queries(queries), k, allowed)

    def pair_scores(self, queries: list[str], doc_ids: list[str]) -> np.ndarray:
        """The score of doc_ids[i] for queries[i], each pair on its own (a mined pair's positive outside the top k)."""
        if not queries:
            return np.zeros(0, dtype=np.float32)
        position = {d: j for j, d in enumerate(self.doc_ids)}
        docs = self.index.reconstruct_batch(np.array([position[d] for d in doc_ids], dtype=np.int64))
        return np.sum(self.encode_queries(queries) * docs, axis=1)

    def search_embeddings(self, embeddings: np.ndarray, k: int, allowed: Allowed = None) -> list[Hits]:
        k = clamp_k(k, len(self.doc_ids))
        if allowed is None:
            scores, indices = self.index.search(embeddings, k)
        else:
            scores, indices = self._search_allowed(embeddings, k, allowed)
        return [[(self.doc_ids[j], float(s)) for s, j in zip(srow, irow) if j >= 0]
                for srow, irow in zip(scores, indices)]

    def _search_allowed(self, embeddings: np.ndarray, k: int, allowed: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
        """The top k of the allowed rows: FAISS's ID selector inside the index's own search, exact for a flat index.
        On HNSW or IVF, up to EXACT_FILTERED_ROWS passing rows are scanned exactly instead (an approximate graph
        search over a small passing set was exact only by luck). A larger one that comes back short (the graph or
        the probed lists hold too few passing rows) is redone exhaustively, so k come back whenever k rows pass."""
        import faiss

        rows = positions(self.doc_ids, allowed, self._rows)
        k = min(k, len(rows))
        if k == 0:
            return np.zeros((len(embeddings), 0), np.float32), np.zeros((len(embeddings), 0), np.int64)
        def exhaustive() -> tuple[np.ndarray, np.ndarray]:
            scores, found = search(embeddings, self.index.reconstruct_batch(rows), k)
            return scores, np.where(found >= 0, rows[np.maximum(found, 0)], -1)

        index = faiss.downcast_index(self.index)
        approximate = isinstance(index, (faiss.IndexIVF, faiss.IndexHNSW))
        if approximate and len(rows) <= EXACT_FILTERED_ROWS:  # few pass: scanning them is exact, and cheap
            return exhaustive()
        bitmap = np.packbits(row_mask(self.doc_ids, allowed, self._rows), bitorder="little")  # kept alive here
        selector = faiss.IDSelectorBitmap(len(self.doc_ids), faiss.swig_ptr(bitmap))  # no hash set per query
        if isinstance(index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
        elif isinstance(index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
        else:
            params = faiss.SearchParameters(sel=selector)
        scores, indices = self.index.search(embeddings, k, params=params)
        return exhaustive() if (indices < 0).any() else (scores, indices)

    def save(self, folder: str | Path) -> None:
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / "faiss.index"))

    def load_index(self, folder: str | Path, doc_ids: list[str]) -> None:
        import faiss

        path = Path(folder) / "faiss.index"
        if not path.is_file():
            raise DataError(f"{folder}: no faiss.index; rebuild the index")
        self.index = faiss.read_index(str(path))
        self.doc_ids = doc_ids


def dense_run(model, corpus: dict[str, str], queries: dict[str, str], placement: Placement, k: int = 100,
              batch_size: int | None = None, query_prompt: str | None = None, document_prompt: str | None = None,
              show_progress: bool = False) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Retrieve the top k documents for every query with exact search; return the run and timings in seconds."""
    doc_ids = list(corpus)
    start = time.perf_counter()
    docs = encode(model, [corpus[d] for d in doc_ids], placement, batch_size, document_prompt, show_progress)
    encoded = time.perf_counter()
    query_ids = list(queries)
    emb = encode(model, [queries[q] for q in query_ids], placement, batch_size, query_prompt)
    scores, indices = search(emb, docs, k)
    done = time.perf_counter()
    run = {qid: {doc_ids[j]: float(s) for s, j in zip(scores[i], indices[i]) if j >= 0}
           for i, qid in enumerate(query_ids)}
    timings = {"index_build_s": encoded - start, "query_s": done - encoded,
               "query_ms_per_query": 1000 * (done - encoded) / max(1, len(query_ids))}
    return run, timings
