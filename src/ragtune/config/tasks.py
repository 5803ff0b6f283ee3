"""Every config kind by short name: the training tasks, plus the retrieval and mining settings."""

from __future__ import annotations

from ragtune.config.base import Section
from ragtune.config.generate import LLMConfig, Seq2SeqConfig
from ragtune.config.rag import RAGSection
from ragtune.config.rerank import RerankConfig
from ragtune.config.retrieval import HardNegativesSection, RetrievalConfig
from ragtune.config.schema import EmbedConfig

TASKS: dict[str, type[Section]] = {"embed": EmbedConfig, "rerank": RerankConfig, "llm": LLMConfig,
                                   "seq2seq": Seq2SeqConfig, "retrieval": RetrievalConfig,
                                   "mine": HardNegativesSection, "query": RAGSection}
