"""LangChain adapters: a retriever over a ragtune index (hybrid + rerank inside), an embeddings class for
ragtune-trained models with a cache for repeated texts, and an export that `FAISS.load_local` reads."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.stores import ByteStore, InMemoryByteStore

log = logging.getLogger(__name__)


class RagtuneRetriever(BaseRetriever):
    """A langchain-core retriever over a ragtune index; each Document carries its source in its metadata.
    `search_kwargs` takes `k` and a metadata `filter` (LangChain's shape: {"team": "search", "year": {"$gte":
    2024}}), as a vector store's retriever does; `invoke(query, filter=..., k=...)` overrides them per call."""

    pipeline: Any  # ragtune.rag.pipeline.RAGPipeline
    search_kwargs: dict = {}

    @classmethod
    def from_index(cls, path: str | Path, reranker: str | None = None, k: int = 4, first_stage: str = "hybrid",
                   search_kwargs: dict | None = None, **settings: Any) -> RagtuneRetriever:
        from ragtune.config.rag import RAGSection
        from ragtune.rag.pipeline import RAGPipeline

        pipeline = RAGPipeline.from_index(str(path), reranker=reranker,
                                          settings=RAGSection(k=k, first_stage=first_stage, **settings))
        return cls(pipeline=pipeline, search_kwargs=search_kwargs or {})

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        options = {**self.search_kwargs, **kwargs}
        unknown = set(options) - {"k", "filter"}
        if unknown:
            from ragtune.errors import ConfigError

            raise ConfigError(f"search_kwargs: {', '.join(sorted(unknown))} not understood; use k and filter")
        sources = self.pipeline.retrieve(query, where=options.get("filter"), k=options.get("k"))
        return [Document(page_content=s.text, metadata={"source": s.source, "title": s.title, "page": s.page,
                                                       "chunk_id": s.id, "score": s.score, **s.metadata})
                for s in sources]


class RagtuneEmbeddings(Embeddings):
    """Embeddings from a sentence-transformers model (e.g. RUN_DIR/final), unit-normalised, cached so repeated
    documents are encoded once; the hit rate is logged on every call.

    The cache is any LangChain `ByteStore`: in memory by default, or a persistent one (langchain's
    `LocalFileStore`, a Redis store, ...) to keep vectors across processes. Keys carry the model's weights
    fingerprint and the document prompt, so one store can serve several models without mixing their vectors."""

    def __init__(self, model: str = "sentence-transformers/all-MiniLM-L6-v2", batch_size: int | None = None,
                 query_prompt: str | None = None, document_prompt: str | None = None, store: ByteStore | None = None,
                 backend: str = "auto"):
        from ragtune.config.base import PromptsSection
        from ragtune.config.retrieval import DenseSection
        from ragtune.models.device import choose_placement
        from ragtune.models.fingerprint import model_fingerprint
        from ragtune.models.load import load_embedder
        from ragtune.models.onnx_backend import backend_of
        from ragtune.models.resolve import resolve_model
        from ragtune.retrieval.dense import model_prompts

        self.placement = choose_placement()
        path = resolve_model(model)
        self.model = load_embedder(path, self.placement, backend=backend)
        self.batch_size = batch_size
        prompts = DenseSection(prompts=PromptsSection(query=query_prompt, document=document_prompt))
        self.query_prompt, self.document_prompt = model_prompts(self.model, prompts)  # as the index encodes
        self.store = store if store is not None else InMemoryByteStore()
        identity = f"{model_fingerprint(path) or model}\0{self.document_prompt or ''}"
        if backend_of(self.model) != "torch":  # ONNX vectors differ slightly from torch's: keep them apart
            identity += f"\0{backend_of(self.model)}"
        self._namespace = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
        self.hits = self.misses = 0

    def _encode(self, texts: list[str], prompt: str | None) -> np.ndarray:
        from ragtune.retrieval.dense import encode

        return encode(self.model, texts, self.placement, self.batch_size, prompt)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        # '/'-separated: the key alphabet every ByteStore accepts (LocalFileStore takes [a-zA-Z0-9_.\-/] only)
        keys = [f"ragtune/{self._namespace}/{hashlib.sha256(t.encode('utf-8')).hexdigest()}" for t in texts]
        unique = list(dict.fromkeys(keys))
        found = dict(zip(unique, self.store.mget(unique)))
        todo = [k for k in unique if found[k] is None]
        if todo:
            first = dict(zip(keys, texts))
            fresh = [(k, vector.astype(np.float32).tobytes())
                     for k, vector in zip(todo, self._encode([first[k] for k in todo], self.document_prompt))]
            self.store.mset(fresh)
            found.update(fresh)
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        log.info("embedding cache: %d of %d texts were cached (hit rate %.0f%% overall)", len(keys) - len(todo),
                 len(keys), 100 * self.hits / max(1, self.hits + self.misses))
        return [np.frombuffer(found[k], dtype=np.float32).tolist() for k in keys]

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text], self.query_prompt)[0].tolist()


class _SaveOnly(Embeddings):
    """Stands in for the embedder while LangChain writes the folder; the reader passes the real one."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError("load the folder with FAISS.load_local and a RagtuneEmbeddings")

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError("load the folder with FAISS.load_local and a RagtuneEmbeddings")


NOTE = """This folder was written by `ragtune export langchain` for langchain_community's FAISS vector store:

    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    from ragtune.integrations.langchain import RagtuneEmbeddings
    store = FAISS.load_local("{out}", RagtuneEmbeddings("{embedder}"),
                             allow_dangerous_deserialization=True,
                             distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)

index.faiss is a plain FAISS file. index.pkl is LangChain's docstore, and LangChain's loader reads it with
pickle, which can run code: load only folders you (or ragtune) wrote. The ragtune index itself has no pickle.
Vectors are unit-normalised for cosine models (inner product is then cosine similarity), raw for dot-product ones.
"""


def export_langchain(index_path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write index.faiss + index.pkl (LangChain's format) for the chunks of a ragtune index."""
    import shutil

    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

    from ragtune.errors import OutputError
    from ragtune.index import Index
    from ragtune.utils import output_folder

    out, source = output_folder(out), Path(index_path).resolve()
    if out.resolve() == source or source in out.resolve().parents or out.resolve() in source.parents:
        raise OutputError(f"{out}: is the index {index_path}, lies inside it or holds it; choose a folder apart from "
                          "the index")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out}: exists; pass --overwrite to replace it or choose another folder")
    index = Index(index_path)
    ids = list(index.texts())
    docs = {c.id: Document(page_content=c.text, metadata={"source": c.source, "title": c.title, "page": c.page,
                                                          "chunk_id": c.id, **c.metadata})
            for c in index.chunks(ids)}
    store = FAISS(embedding_function=_SaveOnly(), index=index.faiss(), docstore=InMemoryDocstore(docs),
                  index_to_docstore_id=dict(enumerate(ids)), distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    if out.exists():
        shutil.rmtree(out)
    store.save_local(str(out))
    embedder = index.manifest["embedder"]
    (out / "README.txt").write_text(NOTE.format(out=out, embedder=embedder["path"]), encoding="utf-8")
    return out
