"""Build retrieval pipelines from specs over one corpus, sharing models and indexes between pipelines."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ragtune.config.retrieval import FusionSection, RetrievalConfig
from ragtune.models.device import Placement, choose_placement
from ragtune.retrieval.base import Allowed, Hits, Retriever, check_corpus
from ragtune.retrieval.fusion import fuse
from ragtune.retrieval.rerank import Reranker
from ragtune.retrieval.spec import Spec, parse_spec

log = logging.getLogger(__name__)


def check_weights(settings: FusionSection, parts: int, name: str) -> None:
    """One fusion weight per fused retriever, checked before anything is built or evaluated."""
    if settings.weights is not None and len(settings.weights) != parts:
        from ragtune.errors import ConfigError

        raise ConfigError(f"fusion.weights has {len(settings.weights)} values but '{name}' fuses {parts} "
                          "retrievers; give one weight each")


class HybridRetriever:
    """Fuses the rankings of several retrievers (each asked for `fusion.depth` candidates)."""

    def __init__(self, parts: list[Retriever], settings: FusionSection, name: str = "hybrid"):
        check_weights(settings, len(parts), name)
        self.parts, self.settings, self.name = parts, settings, name

    def part_rankings(self, queries: list[str], k: int, allowed: Allowed = None) -> list[list[Hits]]:
        depth = max(k, self.settings.depth)
        return [part.search(queries, depth, allowed) for part in self.parts]

    def search(self, queries: list[str], k: int, allowed: Allowed = None) -> list[Hits]:
        return fuse(self.part_rankings(queries, k, allowed), self.settings, k)


@dataclass
class Pipeline:
    """A first stage, optionally followed by a cross-encoder over its top k."""

    spec: Spec
    first: Retriever
    corpus: dict[str, str]
    reranker: Reranker | None = None
    rerank_k: int = 100
    build_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.text

    def search(self, queries: list[str], k: int, allowed: Allowed = None) -> list[Hits]:
        depth = max(k, self.rerank_k) if self.reranker else k
        hits = self.first.search(queries, depth, allowed)
        if self.reranker is None:
            return hits
        return [self.reranker.rerank(q, h, self.corpus, self.rerank_k)[:k] for q, h in zip(queries, hits)]

    def search_timed(self, query: str, k: int, allowed: Allowed = None) -> tuple[Hits, float, float]:
        """One query, with first-stage and rerank wall times in milliseconds."""
        start = time.perf_counter()
        hits = self.first.search([query], max(k, self.rerank_k) if self.reranker else k, allowed)[0]
        first = time.perf_counter()
        if self.reranker is not None:
            hits = self.reranker.rerank(query, hits, self.corpus, self.rerank_k)[:k]
        done = time.perf_counter()
        return hits, 1000 * (first - start), 1000 * (done - first)


@dataclass
class PipelineBuilder:
    """Builds first stages once per distinct spec and loads each model once."""

    corpus: dict[str, str]
    config: RetrievalConfig = field(default_factory=RetrievalConfig)
    placement: Placement | None = None
    show_progress: bool = False
    _stages: dict[str, tuple[Retriever, float]] = field(default_factory=dict)
    _models: dict[tuple[str, str], object] = field(default_factory=dict)

    def __post_init__(self):
        check_corpus(self.corpus)
        self.placement = self.placement or choose_placement(self.config.device, self.config.precision)

    def _model(self, role: str, name: str):
        from ragtune.models.load import load_cross_encoder, load_embedder, load_multivector

        if (role, name) not in self._models:
            if role == "maxsim":
                self._models[(role, name)] = load_multivector(name, self.placement)
            else:
                loader = load_embedder if role == "dense" else load_cross_encoder
                self._models[(role, name)] = loader(name, self.placement, backend=self.config.backend)
        return self._models[(role, name)]

    def first_stage(self, spec: Spec) -> tuple[Retriever, float]:
        """The spec's first stage and the seconds its index took to build (shared parts counted in full)."""
        key = Spec(spec.kind, spec.model, spec.parts).__repr__()
        if key in self._stages:
            return self._stages[key]
        start = time.perf_counter()
        if spec.kind == "bm25":
            from ragtune.retrieval.bm25 import BM25Retriever

            stage, seconds = BM25Retriever.build(self.corpus, self.config.bm25), None
        elif spec.kind == "dense":
            from ragtune.models.resolve import resolve_model
            from ragtune.retrieval.dense import DenseRetriever

            model = self._model("dense", spec.model)
            stage = DenseRetriever.build(self.corpus, model, self.placement, self.config.dense,
                                         model_path=resolve_model(spec.model), name=f"dense:{spec.model}",
                                         show_progress=self.show_progress)
            seconds = None
        else:
            parts = [self.build(part) for part in spec.parts]
            stage = HybridRetriever([p if p.reranker else p.first for p in parts], self.config.fusion,
                                    name=spec.text)
            seconds = sum(p.build_seconds for p in parts)
        built = (stage, seconds if seconds is not None else time.perf_counter() - start)
        self._stages[key] = built
        return built

    def build(self, spec: Spec | str) -> Pipeline:
        spec = parse_spec(spec) if isinstance(spec, str) else spec
        stage, seconds = self.first_stage(spec)
        reranker = None
        if spec.reranker and spec.second == "maxsim":
            from ragtune.retrieval.maxsim import MaxSimReranker

            reranker = MaxSimReranker(self._model("maxsim", spec.reranker), self.placement,
                                      name=f"maxsim:{spec.reranker}", batch_size=self.config.dense.batch_size,
                                      settings=self.config.rerank)
        elif spec.reranker:
            reranker = Reranker(self._model("rerank", spec.reranker), self.placement, self.config.rerank,
                                name=f"rerank:{spec.reranker}")
        return Pipeline(spec, stage, self.corpus, reranker, spec.rerank_k or self.config.rerank_k, seconds)
