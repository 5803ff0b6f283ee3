"""CLaRa's model (issue 20, after Apple's paper, arXiv 2511.18659; written from the paper, not from its code): one
frozen causal LM with named LoRA adapters, memory tokens, and the losses of its three stages.

- **Memory tokens.** A document of up to `doc_max_length` tokens gets `doc_max_length // compress_rate` memory
  tokens appended (`<mem0>`, `<mem1>`, ...). With the `compressor` adapter on, the LM's last hidden states at those
  positions are the compressed document.
- **Placeholders.** The generator's prompt holds one `<memslot>` token per memory vector; its input embeddings at
  those positions are replaced by the memory vectors, so the `generator` adapter answers from them alone.
- **What trains**: the adapters, and of the embedding matrix only the rows of the new tokens (a gradient mask: the
  base vocabulary's rows, and a tied LM head's, get no update).
- **Adapters are switched without touching requires_grad**, so a step that compresses with one adapter and
  generates with another trains both (PEFT's `set_adapter` would freeze the inactive one).
- Stage 1 and 2 loss: next-token cross-entropy of the answer + `mse_weight` x MSE between the mean of the memory
  states and the mean of the document's token states. Stage 3 (query adapter, differentiable top-k) builds on
  `select_top_k` in topk.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ragtune.clara.topk import select_top_k
from ragtune.errors import ConfigError

MEMORY_PREFIX, SLOT = "<mem{}>", "<memslot>"
ADAPTERS = ("compressor", "generator", "query")
CLARA_FILE, ROWS_FILE, ADAPTERS_DIR = "clara.json", "memory_rows.safetensors", "adapters"


@dataclass(frozen=True)
class ClaraShape:
    """How documents are compressed: `doc_max_length` tokens into `doc_max_length // compress_rate` vectors."""

    compress_rate: int = 32
    doc_max_length: int = 256

    def __post_init__(self):
        for name in ("compress_rate", "doc_max_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}: should be a positive integer, not {getattr(self, name)!r}")
        if self.doc_max_length % self.compress_rate:
            raise ConfigError(f"compress_rate: {self.compress_rate} does not divide doc_max_length "
                              f"({self.doc_max_length}); pick a divisor, e.g. {_divisor_near(self)}")

    @property
    def memory_tokens(self) -> int:
        return self.doc_max_length // self.compress_rate


def _divisor_near(shape: ClaraShape) -> int:
    return min((d for d in range(1, shape.doc_max_length + 1) if shape.doc_max_length % d == 0),
               key=lambda d: abs(d - shape.compress_rate))


def add_memory_tokens(model, tokenizer, shape: ClaraShape) -> tuple[list[int], int]:
    """Add the memory tokens and the placeholder to the tokenizer and the model's embeddings; returns their ids.
    The new rows start at the mean of the old ones, so that they begin where the base model's inputs live."""
    names = [MEMORY_PREFIX.format(i) for i in range(shape.memory_tokens)] + [SLOT]
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and limit < shape.doc_max_length + shape.memory_tokens:
        raise ConfigError(f"doc_max_length: {shape.doc_max_length} tokens plus {shape.memory_tokens} memory tokens "
                          f"do not fit the base model's {limit} positions; lower doc_max_length")
    if any(name in tokenizer.get_vocab() for name in names):
        raise ConfigError(f"the base model's tokenizer already has tokens named like {names[0]}; CLaRa needs room "
                          "for new ones")
    tokenizer.add_special_tokens({"additional_special_tokens": names}, replace_extra_special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(names)
    old = model.get_input_embeddings().weight.shape[0]
    if max(ids) >= old:  # a matrix padded past its tokenizer (Qwen2) may already have the rows
        model.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    with torch.no_grad():  # every new row starts at the mean of the vocabulary's
        for table in embedding_tables(model):
            table[ids] = table[:min(ids)].mean(0)
    return ids[:-1], ids[-1]


def embedding_tables(model) -> list[torch.Tensor]:
    """The input embedding matrix and, where it is not tied to it, the LM head's: what the new rows live in."""
    tables = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not tables[0]:
        tables.append(head.weight)
    return tables


ROW_KEYS = ("input", "output")  # the tables' names in memory_rows.safetensors


def put_rows(model, first: int, rows: dict) -> None:
    """Saved new-token rows (`rows`, from row `first` on) back into the model's tables."""
    with torch.no_grad():
        for table, key in zip(embedding_tables(model), ROW_KEYS):
            if key in rows:
                table[first:] = rows[key].to(table.dtype)


RESERVED = re.compile(r"<mem(?:\d+|slot)>")


def clean(text: str) -> str:
    """User text without CLaRa's reserved token names (they would be read as memory tokens)."""
    return RESERVED.sub("", text)


def train_only_new_rows(model, first_new: int) -> None:
    """Only the rows from `first_new` on (the new tokens) of the input embeddings, and of an untied LM head, get a
    gradient; the base vocabulary's rows stay as they are."""
    for weight in embedding_tables(model):
        weight.requires_grad_(True)
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[first_new:] = 1
        weight.register_hook(lambda grad, mask=mask: grad * mask)


def use_adapter(model, name: str) -> None:
    """Make `name` the active LoRA adapter of every PEFT layer, leaving every adapter's requires_grad as it is."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module._active_adapter = [name]


class Clara(torch.nn.Module):
    """A PEFT model (adapters named compressor and generator, and query for stage 3) over the base LM, with
    the memory token ids; `compress` documents, then `answer_loss` from their memory vectors."""

    def __init__(self, peft_model, tokenizer, shape: ClaraShape, memory_ids: list[int], slot_id: int,
                 mse_weight: float = 0.1):
        super().__init__()
        self.model, self.tokenizer, self.shape = peft_model, tokenizer, shape
        self.memory_ids, self.slot_id, self.mse_weight = list(memory_ids), slot_id, mse_weight

    @classmethod
    def from_base(cls, base, tokenizer, shape: ClaraShape, r: int = 16, alpha: int = 32, dropout: float = 0.0,
                  mse_weight: float = 0.1, adapters: tuple[str, ...] = ("compressor", "generator")) -> "Clara":
        from peft import LoraConfig, get_peft_model

        memory_ids, slot_id = add_memory_tokens(base, tokenizer, shape)
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear",
                            task_type="CAUSAL_LM")
        model = get_peft_model(base, config, adapter_name=adapters[0])
        for name in adapters[1:]:
            model.add_adapter(name, config)
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
        train_only_new_rows(model.get_base_model(), min(memory_ids))
        return cls(model, tokenizer, shape, memory_ids, slot_id, mse_weight)

    @property
    def adapters(self) -> list[str]:
        return [name for name in ADAPTERS if name in self.model.peft_config]

    def add_query_adapter(self) -> None:
        """Stage 3's query adapter, started from the compressor's weights (questions begin in the space where
        documents are compressed)."""
        self.model.add_adapter("query", self.model.peft_config["compressor"])
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, param in named.items():
                if ".query." in name and "lora_" in name:
                    param.copy_(named[name.replace(".query.", ".compressor.")])

    def trainable(self, adapters: list[str]) -> None:
        """Train these adapters (and the new token rows); freeze every other parameter."""
        for name, param in self.model.named_parameters():
            param.requires_grad_(any(f".{a}." in name for a in adapters) and "lora_" in name)
        train_only_new_rows(self.model.get_base_model(), min(self.memory_ids))

    def save(self, folder) -> None:
        """adapters/<name>/ (PEFT), the new token rows, the tokenizer and clara.json: what `load` reads."""
        import json
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder / ADAPTERS_DIR, selected_adapters=self.adapters,
                                   save_embedding_layers=False)  # the new rows are saved on their own
        first = min(self.memory_ids)
        save_file({key: table[first:].detach().float().cpu().contiguous()
                   for key, table in zip(ROW_KEYS, embedding_tables(self.model.get_base_model()))},
                  str(folder / ROWS_FILE))
        self.tokenizer.save_pretrained(folder)
        info = {"base": getattr(self, "base_name", None), "compress_rate": self.shape.compress_rate,
                "doc_max_length": self.shape.doc_max_length, "memory_ids": self.memory_ids, "slot_id": self.slot_id,
                "mse_weight": self.mse_weight, "adapters": self.adapters, "stage": getattr(self, "stage", None)}
        (folder / CLARA_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")

    def restore(self, folder) -> None:
        """The memory rows and adapter weights saved in `folder` (a checkpoint of this model), in place."""
        from pathlib import Path

        from peft import load_peft_weights, set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(folder)
        put_rows(self.model.get_base_model(), min(self.memory_ids), load_file(str(folder / ROWS_FILE)))
        for name in self.adapters:
            set_peft_model_state_dict(self.model, load_peft_weights(str(folder / ADAPTERS_DIR / name)),
                                      adapter_name=name)

    @classmethod
    def load(cls, folder, base, tokenizer=None) -> "Clara":
        """A saved CLaRa model over `base` (the same base LM, loaded): its token rows and adapters restored."""
        import json
        from pathlib import Path

        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        folder = Path(folder)
        info = json.loads((folder / CLARA_FILE).read_text(encoding="utf-8"))
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(folder)
        first = min(info["memory_ids"])
        rows = load_file(str(folder / ROWS_FILE))
        size = first + len(rows["input"])  # the table as saved (a padded vocabulary keeps its padding)
        if base.get_input_embeddings().weight.shape[0] != size:
            base.resize_token_embeddings(size, mean_resizing=False)
        put_rows(base, first, rows)
        names = info["adapters"]
        model = PeftModel.from_pretrained(base, folder / ADAPTERS_DIR / names[0], adapter_name=names[0],
                                          is_trainable=True)
        for name in names[1:]:
            model.load_adapter(folder / ADAPTERS_DIR / name, adapter_name=name, is_trainable=True)
        clara = cls(model, tokenizer, ClaraShape(info["compress_rate"], info["doc_max_length"]),
                    info["memory_ids"], info["slot_id"], info["mse_weight"])
        clara.base_name, clara.stage = info.get("base"), info.get("stage")
        return clara

    @property
    def embeddings(self):
        return self.model.get_base_model().get_input_embeddings()

    def document_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Each document's tokens (at most doc_max_length), then its memory tokens, left-padded so that the memory
        tokens sit at the same positions in every row."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        encoded = self.tokenizer([clean(t) for t in texts], add_special_tokens=False, truncation=True,
                                 max_length=self.shape.doc_max_length)["input_ids"]
        width = max(len(ids) for ids in encoded) + len(self.memory_ids)
        ids = torch.full((len(texts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            full = tokens + self.memory_ids
            ids[row, width - len(full):] = torch.tensor(full)
            mask[row, width - len(full):] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def compress(self, texts: list[str], adapter: str = "compressor") -> tuple[torch.Tensor, torch.Tensor]:
        """(memory vectors (n, memory_tokens, hidden), the MSE between their mean and the mean of the documents'
        token states) with `adapter` on."""
        use_adapter(self.model, adapter)
        inputs = {k: v.to(self.model.device) for k, v in self.document_inputs(texts).items()}
        out = self.model(**inputs, output_hidden_states=True, use_cache=False)
        states = out.hidden_states[-1]
        n = len(self.memory_ids)
        memory = states[:, -n:]
        doc_mask = inputs["attention_mask"].clone()
        doc_mask[:, -n:] = 0
        weights = doc_mask.unsqueeze(-1).to(states.dtype)
        doc_mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return memory, F.mse_loss(memory.mean(1), doc_mean)

    def prompt_with_slots(self, question: str, documents: int) -> str:
        """The generator's prompt: one placeholder per memory vector of each document, then the question."""
        slots = SLOT * len(self.memory_ids)
        context = "\n".join(f"[{i + 1}] {slots}" for i in range(documents))
        return f"Context:\n{context}\nQuestion: {clean(question)}\nAnswer:"

    def _embedded(self, ids: torch.Tensor, memories: list[torch.Tensor]) -> torch.Tensor:
        """Input embeddings of `ids` (b, t) with row i's placeholders, in order, replaced by memories[i]
        (slots_i, h)."""
        embedded = self.embeddings(ids)
        slots = ids == self.slot_id
        counts = slots.sum(1).tolist()
        if counts != [len(m) for m in memories]:
            raise ValueError(f"placeholders {counts} for memory vectors {[len(m) for m in memories]}")
        return embedded.masked_scatter(slots.unsqueeze(-1), torch.cat(memories).to(embedded.dtype))

    def answer_nll(self, questions: list[str], answers: list[str],
                   memories: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed negative log-likelihood, answer tokens) of each answer, given its question and its documents'
        memory vectors (memories[i]: (documents_i * memory_tokens, h)), with the generator adapter on; only answer
        tokens count."""
        use_adapter(self.model, "generator")
        eos = self.tokenizer.eos_token or ""
        rows, labels = [], []
        for question, answer, memory in zip(questions, answers, memories):
            docs = len(memory) // len(self.memory_ids)
            prompt = self.tokenizer(self.prompt_with_slots(question, docs), add_special_tokens=False)["input_ids"]
            target = self.tokenizer(" " + clean(answer) + eos, add_special_tokens=False)["input_ids"]
            rows.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        label_ids = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, label) in enumerate(zip(rows, labels)):  # right padding: the slots stay in prompt order
            ids[i, :len(row)], label_ids[i, :len(label)], mask[i, :len(row)] = (torch.tensor(row),
                                                                              torch.tensor(label), 1)
        device = self.model.device
        embedded = self._embedded(ids.to(device), memories)
        logits = self.model(inputs_embeds=embedded, attention_mask=mask.to(device), use_cache=False).logits
        targets = label_ids.to(device)[:, 1:]
        nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
        return nll.sum(1), (targets != -100).sum(1)

    def per_example(self, documents: list[list[str]], adapter: str = "compressor") -> tuple[list, torch.Tensor]:
        """Every example's documents compressed (one call for all), as per-example memory vectors
        (documents_i * memory_tokens, h), and the MSE term."""
        flat = [doc for docs in documents for doc in docs]
        memory, mse = self.compress(flat, adapter)
        per, start = [], 0
        for docs in documents:
            per.append(memory[start:start + len(docs)].reshape(-1, memory.shape[-1]))
            start += len(docs)
        return per, mse

    def stage_loss(self, documents: list[list[str]], questions: list[str], answers: list[str]) -> dict:
        """Stages 1 and 2: compress each example's documents, answer from them; CE (per answer token) +
        mse_weight x MSE."""
        memories, mse = self.per_example(documents)
        nll, tokens = self.answer_nll(questions, answers, memories)
        ce = nll.sum() / tokens.sum().clamp(min=1)
        return {"loss": ce + self.mse_weight * mse, "ce": ce.detach(), "mse": mse.detach()}

    def e2e_loss(self, candidates: list[list[str]], questions: list[str], answers: list[str], top_k: int,
                 temperature: float = 0.02) -> dict:
        """Stage 3: the query adapter compresses each question as it compresses a document; candidates are scored
        by the cosine of their mean memory vectors, a differentiable top-k picks `top_k` of them, and the
        generator answers from those. CE alone trains the query adapter (the reranker) and the generator; the
        candidates' compression is fixed (no gradient)."""
        with torch.no_grad():
            stored, _ = self.per_example(candidates)
        stacked = torch.stack([m.reshape(len(c), len(self.memory_ids), -1) for m, c in zip(stored, candidates)])
        queries, _ = self.compress(questions, "query")
        scores = torch.einsum("bh,bnh->bn", F.normalize(queries.mean(1), dim=-1),
                              F.normalize(stacked.mean(2), dim=-1))
        selection = select_top_k(scores, top_k, temperature)
        chosen = torch.einsum("bkn,bnmh->bkmh", selection, stacked)
        nll, tokens = self.answer_nll(questions, answers, list(chosen.reshape(len(questions), -1, chosen.shape[-1])))
        ce = nll.sum() / tokens.sum().clamp(min=1)
        return {"loss": ce, "ce": ce.detach(), "scores": scores.detach()}

    @torch.no_grad()
    def rank(self, question: str, candidates: list[str]) -> list[int]:
        """Candidates best first, as stage 3's query adapter scores them."""
        stored, _ = self.compress(candidates)
        query, _ = self.compress([question], "query")
        scores = F.normalize(stored.mean(1), dim=-1) @ F.normalize(query.mean(1), dim=-1)[0]
        return torch.argsort(scores, descending=True).tolist()

    @torch.no_grad()
    def first_token_logprobs(self, question: str, documents: list[str], memory=None) -> torch.Tensor:
        """Log-probabilities of the answer's first token, given the question and the compressed documents
        (`memory`: those documents already compressed)."""
        prompt, embedded = self._prompt_embeds(question, documents, memory)
        logits = self.model(inputs_embeds=embedded, use_cache=False).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)

    def _prompt_embeds(self, question: str, documents: list[str], memory=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator's prompt ids for one question and its input embeddings with the documents' memory
        vectors in the slots (compressed here unless `memory` is given), with the generator adapter on."""
        memory = self.compress(documents)[0] if memory is None else memory
        use_adapter(self.model, "generator")
        prompt = self.tokenizer(self.prompt_with_slots(question, len(documents)), add_special_tokens=False,
                                return_tensors="pt")["input_ids"].to(self.model.device)
        return prompt, self._embedded(prompt, [memory.reshape(-1, memory.shape[-1])])

    @torch.no_grad()
    def answer(self, question: str, documents: list[str], max_new_tokens: int = 32, memory=None) -> str:
        """Greedy answer to `question` from the compressed `documents` (`memory`: already compressed)."""
        prompt, embedded = self._prompt_embeds(question, documents, memory)
        out = self.model.generate(inputs_embeds=embedded, attention_mask=torch.ones_like(prompt),
                                  max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()
