"""`ragtune serve` settings: where it listens, its limits, batching, the embedding cache, and how it answers."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ragtune.config.base import Section
from ragtune.config.rag import RAGSection


class ServeConfig(Section):
    """`ragtune serve INDEX -c FILE`: an OpenAI-compatible server over an index and its models."""

    task: ClassVar[str] = "serve"
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = Field(8000, ge=0, le=65535, description="port (0: any free port)")
    max_body_bytes: int = Field(1_000_000, gt=0, description="largest request body; larger ones get 413")
    max_inputs: int = Field(256, gt=0, description="texts per /v1/embeddings request, documents per /v1/rerank")
    max_input_chars: int = Field(20_000, gt=0, description="characters per text (query, document, message)")
    batch_window_ms: float = Field(5.0, ge=0, description="how long a model call waits for concurrent requests to "
                                   "join its batch")
    max_batch: int = Field(64, gt=0, description="texts (or query-document pairs) per model call")
    cache_size: int = Field(10_000, ge=0, description="embeddings kept in memory by text (0: no cache)")
    index_poll_s: float = Field(1.0, gt=0, description="how often the index's CURRENT is checked for a new version")
    query: RAGSection = Field(default_factory=RAGSection, description="how /v1/search and /v1/chat/completions "
                              "retrieve and answer (first_stage, k, rerank_k, min_score, prompt, ...)")
