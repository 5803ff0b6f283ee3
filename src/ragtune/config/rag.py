"""How `ragtune query` and `RAGPipeline` answer: first stage, rerank depth, threshold, context budget, prompt."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ragtune.config.base import Section

DEFAULT_PROMPT = (
    "Answer the question using only the numbered context passages below. Cite the passages you use as [1], [2], "
    "... after the sentences they support. If the context does not contain the answer, say that you do not know.\n\n"
    "Context:\n{context}\n\nQuestion: {question}"
)


class RAGSection(Section):
    """How `ragtune query` and RAGPipeline answer."""

    task: ClassVar[str] = "query"
    first_stage: Literal["hybrid", "dense", "bm25"] = Field(
        "hybrid", description="the index's first stage: hybrid (its BM25 and dense fused), dense or bm25")
    k: int = Field(5, gt=0, description="passages given to the generator")
    rerank_k: int = Field(50, gt=0, description="first-stage candidates the reranker rescores, when one is set")
    rerank_max_length: int | None = Field(None, gt=0, description="truncate each (question, chunk) pair to N tokens "
                                          "for the reranker, the main latency knob on CPU; default: the model's")
    min_score: float | None = Field(None, description="drop passages scoring below this (reranker or first stage)")
    max_per_source: int = Field(2, gt=0, description="at most N passages from one document")
    context_tokens: int = Field(1500, gt=0, description="token budget for the context")
    prompt: str = Field(DEFAULT_PROMPT, description="prompt template with {context} and {question}")
    system: str | None = Field(None, description="system message")
    max_new_tokens: int = Field(256, gt=0, description="answer length")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0: greedy)")
    filter: dict | None = Field(None, description="metadata filter, LangChain's shape: {team: search, year: "
                                "{$gte: 2024}} (`--where` on the command line); applied before the top k is cut")

    @field_validator("filter")
    @classmethod
    def _a_filter(cls, value: dict | None) -> dict | None:
        from ragtune.retrieval.filters import parse_filter

        parse_filter(value)  # a bad operator or value is reported with the config's other problems
        return value

    @field_validator("prompt")
    @classmethod
    def _has_slots(cls, prompt: str) -> str:
        missing = [slot for slot in ("{context}", "{question}") if slot not in prompt]
        if missing:
            raise ValueError(f"the prompt template lacks {' and '.join(missing)}")
        try:
            prompt.format(context="", question="")
        except (KeyError, IndexError, ValueError):
            raise ValueError("the prompt template has braces other than {context} and {question}; write a literal "
                             "brace as {{ or }}") from None
        return prompt
