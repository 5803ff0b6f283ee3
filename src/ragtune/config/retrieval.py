"""Retrieval settings shared by evaluation, hard-negative mining, reranker training and the RAG index."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ragtune.choices import one_of
from ragtune.config.base import Device, Precision, PromptsSection, Section, device_field, precision_field

# Fusion methods: rrf and wsum run in ragtune (per query, fast enough for serving); the rest go to ranx.fuse.
# ranx's trained or tuned-parameter methods (probfuse, segfuse, rbc, ...) are left out: they need fitting data.
FUSION_METHODS = ("rrf", "wsum", "combsum", "combmnz", "combmax", "combmin", "combmed", "combanz", "isr",
                  "log_isr", "logn_isr", "bordafuse", "w_bordafuse", "condorcet", "w_condorcet", "wmnz", "mixed")
NORMS = ("min-max", "max", "sum", "zmuv", "rank", "borda", "none")


def check_language(language: str) -> None:
    """Fail on a language PyStemmer does not know, with a suggestion."""
    import Stemmer

    one_of("language", language, Stemmer.algorithms())


class BM25Section(Section):
    k1: float = Field(1.5, gt=0, description="BM25 term-frequency saturation")
    b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation")
    language: str = Field("english", description="stemmer and stopword language (PyStemmer names: english, german, ...)")
    stemming: bool = Field(True, description="stem terms with PyStemmer")
    stopwords: bool = Field(True, description="drop the language's stopwords")

    @field_validator("language")
    @classmethod
    def _known_language(cls, language: str) -> str:
        check_language(language)
        return language


class DenseSection(Section):
    index: Literal["flat", "hnsw", "ivf"] = Field(
        "flat", description="FAISS index: flat (exact inner product), hnsw or ivf (approximate, large corpora)")
    hnsw_m: int = Field(32, gt=1, description="HNSW neighbours per node")
    hnsw_ef_search: int = Field(128, gt=0, description="HNSW search breadth (higher: better recall, slower)")
    ivf_nlist: int | None = Field(None, gt=0, description="IVF cells; default and at most 4*sqrt(corpus size), "
                                  "per segment of an index")
    ivf_nprobe: int = Field(16, gt=0, description="IVF cells visited per query")
    batch_size: int | None = Field(None, gt=0, description="encoding batch size; default 16 on CPU, 128 on GPUs")
    cache: bool = Field(True, description="cache document embeddings on disk, keyed by model and corpus hash")
    prompts: PromptsSection = Field(default_factory=PromptsSection,
                                    description="query/document prefixes; default: the model's own prompts")


class FusionSection(Section):
    method: str = Field("rrf", description="rrf | wsum | any ranx fusion method (combmnz, isr, bordafuse, ...)")
    rrf_k: int = Field(60, gt=0, description="RRF constant k")
    norm: str = Field("min-max", description="score normalisation for wsum and the comb* methods")
    weights: list[float] | None = Field(None, description="one weight per fused retriever; default equal")
    depth: int = Field(100, gt=0, description="candidates each fused retriever contributes")

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        return one_of("fusion method", method, FUSION_METHODS, f"choose one of {', '.join(FUSION_METHODS[:8])}, ...")

    @field_validator("norm")
    @classmethod
    def _known_norm(cls, norm: str) -> str:
        return one_of("norm", norm, NORMS, f"choose one of {', '.join(NORMS)}")

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, weights: list[float] | None) -> list[float] | None:
        if weights is not None and (not weights or any(w < 0 for w in weights)):
            raise ValueError("give one non-negative weight per fused retriever")
        return weights


# The two names every config uses for a retrieval pipeline: its first stage (a spec) and the number of first-stage
# candidates the reranker rescores.
FIRST_STAGE_HELP = "pipeline spec that proposes candidates: bm25, dense:MODEL, hybrid(bm25,dense:MODEL)"
RERANK_K_HELP = "first-stage candidates the reranker rescores (a spec's @K wins)"


class RerankSection(Section):
    batch_size: int | None = Field(None, gt=0, description="pairs per forward pass; default 8 on CPU, 64 on GPUs")
    max_length: int | None = Field(None, gt=0, description="truncate query+document to N tokens; default: the model's")
    first_stage_weight: float = Field(0.0, ge=0, le=1, description="mix in the first stage's score (both min-max "
                                      "normalised over the top k): 0 = the reranker alone")


class FirstStageSettings(Section):
    """How first stages are built: BM25, dense and their fusion."""

    bm25: BM25Section = Field(default_factory=BM25Section)
    dense: DenseSection = Field(default_factory=DenseSection)
    fusion: FusionSection = Field(default_factory=FusionSection)


class RetrievalConfig(FirstStageSettings):
    """How retrievers are built: `ragtune eval retrieval -c FILE`, `data mine`, and the RAG index."""

    task: ClassVar[str] = "retrieval"
    device: Device = device_field()
    precision: Precision = precision_field()
    backend: Literal["auto", "torch", "onnx", "openvino"] = Field(
        "auto", description="how embedders and cross-encoders run: auto runs an exported model's chosen file "
        "(ragtune export onnx|openvino) on CPU, else torch; onnx or openvino insists on that export")
    rerank: RerankSection = Field(default_factory=RerankSection)
    rerank_k: int = Field(100, gt=0, description=RERANK_K_HELP)
    pipelines: list[str] = Field(default_factory=list,
                                 description="pipeline specs to evaluate when no --pipeline is given")


class HardNegativesSection(FirstStageSettings):
    """Mine hard negatives for each (query, positive) pair before training; bm25, dense and fusion configure the
    mining retriever."""

    first_stage: str = Field("bm25", description=f"{FIRST_STAGE_HELP}; dense:base means the model being trained")
    num_negatives: int = Field(3, gt=0, description="negatives kept per pair")
    range_min: int = Field(0, ge=0, description="skip the top N candidates (likely unlabelled positives)")
    range_max: int = Field(50, gt=0, description="sample from the top N candidates")
    absolute_margin: float | None = Field(None, description="keep a candidate only if score <= positive - margin")
    relative_margin: float | None = Field(None, ge=0, lt=1,
                                          description="keep only if score <= positive * (1 - margin)")
    max_score: float | None = Field(None, description="keep only candidates scoring at most this")
    sampling: Literal["top", "random"] = Field("top", description="take the best-ranked survivors, or a random sample")
    cross_encoder: str | None = Field(None, description="cross-encoder that rescores candidates to drop false "
                                      "negatives (scoring at least the positive minus cross_encoder_margin)")
    cross_encoder_margin: float = Field(0.0, description="a candidate within this margin of the positive's "
                                        "cross-encoder score counts as a false negative")
    short: Literal["drop", "random"] = Field(
        "drop", description="a pair left with fewer than num_negatives: drop it, or fill up with random documents "
        "from outside its retrieved candidates and positives (any non-positive in a corpus too small for that)")
    output: Literal["triplets", "ntuples", "labeled_pairs"] = Field(
        "ntuples", description="triplets: one row per negative; ntuples: negatives list; labeled_pairs: 0/1 pairs")
    batch_size: int = Field(256, gt=0, description="queries searched at once (bounds memory)")
    seed: int = Field(42, description="seed for random sampling")

    @model_validator(mode="after")
    def _range(self) -> HardNegativesSection:
        if self.range_max <= self.range_min:
            raise ValueError(f"range_max ({self.range_max}) must be greater than range_min ({self.range_min})")
        return self
