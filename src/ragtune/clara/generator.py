"""A CLaRa run as a RAG generator (`query --generator RUN`, `eval rag --generator RUN`): it reads the retrieved
passages as memory vectors, not as text, so its prompt holds `memory_tokens` slots per passage. An index built with
`--clara RUN` stores every chunk's memory vectors, so that a query compresses nothing."""

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
        self.name, self.folder = spec, folder
        self.clara = Clara.load(folder, load_generator(info["base"], placement, "lora"))
        self.clara.model.eval()
        self.window = None

    def count_tokens(self, text: str) -> int:
        return len(self.clara.tokenizer(text, add_special_tokens=False)["input_ids"])

    def context_tokens(self, passages: int) -> int:
        """The generator-side positions `passages` compressed passages take."""
        return passages * self.clara.shape.memory_tokens

    @property
    def hidden_size(self) -> int:
        return self.clara.embeddings.weight.shape[1]

    def memory_vectors(self, texts: list[str], batch_size: int = 8) -> list:
        """Each text's memory vectors, (memory_tokens, hidden) float32 arrays, as an index stores them."""
        import torch

        vectors = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                vectors += [m.float().cpu().numpy() for m in self.clara.compress(texts[i:i + batch_size])[0]]
        return vectors

    def answer_sources(self, questions: list[str], passages: list[list[str]], max_new_tokens: int = 256,
                       labels: list[str] | None = None, memories: list | None = None):
        """One Reply per question, from its passages' memory vectors (`memories[i]`: question i's, already
        stored, (passages, memory_tokens, hidden); else compressed here); with `labels`, each label's likelihood as
        the answer's first token too."""
        import torch

        from ragtune.models.language_model import label_first_tokens
        from ragtune.rag.generators import Reply

        starts = label_first_tokens(self.clara.tokenizer, labels) if labels else None
        replies = []
        for i, (question, docs) in enumerate(zip(questions, passages)):
            stored = memories[i] if memories else None
            with torch.no_grad():  # compressed once, for the answer and the label scores
                memory = stored.to(self.clara.model.device) if stored is not None else \
                    self.clara.compress(docs)[0] if docs else None
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
