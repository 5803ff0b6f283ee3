"""A CLaRa run as a RAG generator (`query --generator RUN`, `eval rag --generator RUN`): it reads the retrieved
passages as memory vectors, not as text, so its prompt holds `memory_tokens` slots per passage."""

from __future__ import annotations

import json
from pathlib import Path

from ragtune.clara.model import CLARA_FILE, Clara


def clara_folder(spec: str) -> Path | None:
    """The CLaRa model folder that `spec` names (a run directory or its final/), or None."""
    for folder in (Path(spec), Path(spec) / "final"):
        if (folder / CLARA_FILE).is_file():
            return folder
    return None


class ClaraGenerator:
    """Answers from compressed passages; `reads_sources` tells the RAG pipeline to hand it the passages
    themselves instead of a prompt with their text."""

    reads_sources = True

    def __init__(self, spec: str, placement=None):
        from ragtune.models.device import choose_placement
        from ragtune.models.language_model import load_generator

        folder = clara_folder(spec)
        info = json.loads((folder / CLARA_FILE).read_text(encoding="utf-8"))
        placement = placement or choose_placement()
        self.name = spec
        self.clara = Clara.load(folder, load_generator(info["base"], placement, "lora"))
        self.clara.model.eval()
        self.window = None

    def count_tokens(self, text: str) -> int:
        return len(self.clara.tokenizer(text, add_special_tokens=False)["input_ids"])

    def context_tokens(self, passages: int) -> int:
        """The generator-side positions `passages` compressed passages take."""
        return passages * self.clara.shape.memory_tokens

    def answer_sources(self, questions: list[str], passages: list[list[str]], max_new_tokens: int = 256,
                       labels: list[str] | None = None):
        """One Reply per question, from its passages' memory vectors; with `labels`, each label's likelihood as
        the answer's first token too."""
        import torch

        from ragtune.models.language_model import label_first_tokens
        from ragtune.rag.generators import Reply

        starts = label_first_tokens(self.clara.tokenizer, labels) if labels else None
        replies = []
        for question, docs in zip(questions, passages):
            with torch.no_grad():  # compressed once, for the answer and the label scores
                memory = self.clara.compress(docs)[0] if docs else None
            text = self.clara.answer(question, docs, max_new_tokens, memory) if docs else ""
            scores = None
            if starts and docs:
                first = self.clara.first_token_logprobs(question, docs, memory)
                scores = {label: float(first[ids].logsumexp(0)) for label, ids in starts.items()}
            replies.append(Reply(text, scores))
        return replies

    def generate(self, messages, max_new_tokens: int = 256, temperature: float = 0.0) -> str:
        from ragtune.errors import ConfigError

        raise ConfigError(f"{self.name} is a CLaRa run: it answers from retrieved passages (ragtune query, eval rag), "
                          "not from a chat")
