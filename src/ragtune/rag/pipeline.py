"""Retrieve -> rerank -> score threshold -> context (deduplicated, token-budgeted) -> generate, with sources."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field

from ragtune.config.rag import RAGSection
from ragtune.index.reader import Index

log = logging.getLogger(__name__)
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")  # [2] and [1, 3]


@dataclass
class Source:
    n: int  # the number the answer cites, [n]
    id: str
    source: str
    title: str
    page: int | None
    score: float
    text: str
    metadata: dict = field(default_factory=dict)


@dataclass
class Answer:
    question: str
    answer: str | None
    sources: list[Source]
    timings: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def check_question(question: str) -> None:
    from ragtune.errors import ConfigError

    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"the question is empty ({question!r}); ask something, e.g. ragtune query INDEX "
                          "\"What lowers blood pressure?\"")


class RAGPipeline:
    """Answers questions from an index, optionally through a reranker, with a local or remote generator. Retrieval
    is the index's spec pipeline: its first stage, then `Reranker.rerank` over the top `rerank_k`."""

    def __init__(self, index: Index, reranker=None, generator=None, settings: RAGSection | None = None,
                 dense=None):
        self.index, self.reranker, self.generator = index, reranker, generator
        self.settings = settings or RAGSection()
        self.retrieval = index.pipeline(self.settings.first_stage, reranker, self.settings.rerank_k, dense)

    @classmethod
    def from_index(cls, path: str, reranker: str | None = None, generator: str | None = None,
                   generator_model: str | None = None, settings: RAGSection | None = None) -> RAGPipeline:
        from ragtune.models.device import choose_placement

        placement = choose_placement()
        index = Index(path, placement)
        rerank = index.second_stage(reranker, (settings or RAGSection()).rerank_max_length) if reranker else None
        make = None
        if generator:
            from ragtune.rag.generators import make_generator

            make = make_generator(generator, generator_model, placement=placement)
        return cls(index, rerank, make, settings)

    def retrieve(self, question: str, timings: dict[str, float] | None = None, where=None,
                 k: int | None = None) -> list[Source]:
        """Ranked, thresholded, per-document-limited passages for the question, of the chunks that `where` (a
        metadata filter; default: the settings' `filter`) keeps; `k` overrides the settings' passage count."""
        check_question(question)
        timings = timings if timings is not None else {}
        s = self.settings if k is None else self.settings.model_copy(update={"k": k})
        allowed = self.index.matching(self.settings.filter if where is None else where)
        hits, timings["retrieve_ms"], rerank_ms = self.retrieval.search_timed(
            question, s.rerank_k if self.reranker else max(s.k * 4, s.k), allowed)
        if self.reranker is not None:
            timings["rerank_ms"] = rerank_ms
        chunks = {c.id: c for c in self.index.chunks([d for d, _ in hits])}
        sources, per_source, seen = [], {}, set()
        for doc, score in hits:
            chunk = chunks[doc]
            if s.min_score is not None and score < s.min_score:
                continue
            document = (chunk.source, chunk.metadata.get("record"))  # a JSONL file holds one document per record
            if chunk.text in seen or per_source.get(document, 0) >= s.max_per_source:
                continue  # duplicate text, or enough from this document already
            seen.add(chunk.text)
            per_source[document] = per_source.get(document, 0) + 1
            sources.append(Source(len(sources) + 1, chunk.id, chunk.source, chunk.title, chunk.page, float(score),
                                  chunk.text, chunk.metadata))
            if len(sources) == s.k:
                break
        return sources

    def answer(self, question: str, generate: bool = True) -> Answer:
        timings: dict[str, float] = {}
        sources = self.retrieve(question, timings)
        if not generate or self.generator is None:
            return Answer(question, None, sources, timings)
        memory = self.index.memory_for(self.generator, [s.id for s in sources[:self.settings.k]]) \
            if getattr(self.generator, "reads_sources", False) else None
        return compose(question, sources, self.generator, self.settings, timings, memory)


def build_context(sources: list[Source], count_tokens, budget: int) -> tuple[str, list[Source]]:
    """The numbered context within the token budget, and the sources it kept (renumbered from 1). A first passage
    longer than the whole budget is cut to fit, with a warning: it is never dropped or passed on silently."""
    blocks, kept, used = [], [], 0
    for source in sources:
        where = source.source + (f", page {source.page}" if source.page else "")
        block = f"[{len(kept) + 1}] ({where}) {source.text}"
        cost = count_tokens(block)
        if kept and used + cost > budget:
            break
        if cost > budget:
            words = block.split()
            block = " ".join(words[: max(1, len(words) * budget // cost)])
            while count_tokens(block) > budget and " " in block:
                block = block.rsplit(" ", 1)[0]
            log.warning("passage %s (%d tokens) is longer than the context budget of %d tokens; cut to fit",
                        source.id, cost, budget)
            cost = count_tokens(block)
        kept.append(Source(**{**asdict(source), "n": len(kept) + 1}))
        blocks.append(block)
        used += cost
    return "\n\n".join(blocks), kept


def context_budget(generator, settings: RAGSection) -> int:
    """settings.context_tokens, lowered (with a warning) to what the generator's window leaves for context."""
    window = getattr(generator, "window", None)
    if not window:
        return settings.context_tokens
    frame = generator.count_tokens(settings.prompt.format(context="", question="") + (settings.system or "")) + 64  # + question
    room = window - settings.max_new_tokens - frame
    if room < settings.context_tokens:
        log.warning("context_tokens=%d does not fit %s's %d positions with max_new_tokens=%d; using %d",
                    settings.context_tokens, generator.name, window, settings.max_new_tokens, max(room, 1))
        return max(room, 1)
    return settings.context_tokens


def messages_for(question: str, sources: list[Source], generator, settings: RAGSection) -> tuple[list[dict],
                                                                                                  list[Source]]:
    """The chat that asks `question` over the budgeted context, and the sources that context kept."""
    count = getattr(generator, "count_tokens", None) or (lambda t: int(len(t.split()) * 1.3) + 1)
    context, kept = build_context(sources, count, context_budget(generator, settings))
    messages = ([{"role": "system", "content": settings.system}] if settings.system else []) + [
        {"role": "user", "content": settings.prompt.format(context=context, question=question)}]
    return messages, kept


def compose(question: str, sources: list[Source], generator, settings: RAGSection,
            timings: dict[str, float] | None = None, memory=None) -> Answer:
    """Prompt the generator with the question and the budgeted context; the answer cites [n] of `sources`. A CLaRa
    generator reads the passages' `memory` vectors where the index stores them, else compresses them."""
    timings = timings if timings is not None else {}
    start = time.perf_counter()
    if getattr(generator, "reads_sources", False):  # CLaRa: the passages as memory vectors
        sources = sources[:settings.k]
        text = generator.answer_sources([question], [[s.text for s in sources]], settings.max_new_tokens,
                                        memories=[memory])[0].text
        timings["generate_ms"] = 1000 * (time.perf_counter() - start)
        return Answer(question, text, sources, timings)
    messages, sources = messages_for(question, sources, generator, settings)
    start = time.perf_counter()
    text = generator.generate(messages, settings.max_new_tokens, settings.temperature)
    timings["generate_ms"] = 1000 * (time.perf_counter() - start)
    return Answer(question, text, sources, timings)


def cited(answer: str, sources: list[Source]) -> list[Source]:
    """The sources an answer cites as [n]."""
    numbers = {int(n) for group in CITATION.findall(answer or "") for n in group.split(",")}
    return [s for s in sources if s.n in numbers]
