"""Render SFT examples through the chat template and tokenize them with a loss mask.

Labels are -100 outside the trained spans: the assistant turns of a chat (their end-of-turn token included, so
the model learns to stop), the completion of a prompt/completion pair, every token of raw text, or everything
with `train_on_prompt`. Spans are found by rendering message prefixes, so they follow whatever template is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragtune.data.sft import SFTExample
from ragtune.errors import DataError

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    origin: str

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def rendered_spans(example: SFTExample, tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The full training text and the character spans the loss is computed on."""
    eos = tokenizer.eos_token or ""
    if example.kind == "text":
        text = example.completion + eos
        return text, [(0, len(text))]
    if example.kind == "completion":
        text = example.prompt + example.completion + eos
        return text, [(len(example.prompt), len(text))]
    text = _render(tokenizer, example.messages)
    spans = []
    for i, message in enumerate(example.messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, example.messages[:i], generation_prompt=True))
        end = len(_render(tokenizer, example.messages[: i + 1]))
        if not text.startswith(_render(tokenizer, example.messages[: i + 1])):
            raise DataError(f"{example.origin}: the chat template is not prefix-stable, so the assistant turns cannot "
                            "be located for the loss mask; use template=chatml or template=alpaca")
        spans.append((start, end))
    return text, spans


def encode(example: SFTExample, tokenizer, max_length: int, train_on_prompt: bool = False) -> Encoded:
    """Token ids and labels (-100 where no loss), truncated to `max_length` from the end."""
    text, spans = rendered_spans(example, tokenizer)
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    encoding = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    if add_special and tokenizer.eos_token_id is not None and len(ids) > 1 and ids[-1] == ids[-2] == \
            tokenizer.eos_token_id:
        ids, offsets = ids[:-1], offsets[:-1]  # a tokenizer that appends EOS itself would double ours
    labels = []
    for token, (start, end) in zip(ids, offsets):
        inside = end > start and any(a <= start < b for a, b in spans)
        labels.append(token if train_on_prompt or inside else IGNORE)
    return Encoded(ids[:max_length], labels[:max_length], example.origin)


def encode_all(examples: list[SFTExample], tokenizer, max_length: int, train_on_prompt: bool = False,
               what: str = "data.train") -> list[Encoded]:
    """Encode every example; fail naming the first record that would train on zero tokens (its answer starts past
    `max_length`), with how many do: training on such a record teaches nothing, and the limit is wrong for it."""
    encoded = [encode(e, tokenizer, max_length, train_on_prompt) for e in examples]
    empty = [e for e in encoded if e.trained == 0]
    if empty:
        raise DataError(f"{empty[0].origin}: this example trains on zero tokens after truncation to max_length="
                        f"{max_length} ({len(empty)} of {len(encoded)} {what} examples do); the answer starts past "
                        "the limit: raise max_length, shorten the prompt, or drop those records")
    return encoded


def marked(encoded: Encoded, tokenizer, limit: int = 600) -> str:
    """The decoded example with trained tokens between ⟦ and ⟧, for a look before training starts."""
    pieces, inside = [], False
    for token, label in zip(encoded.input_ids, encoded.labels):
        trained = label != IGNORE
        if trained != inside:
            pieces.append("⟦" if trained else "⟧")
            inside = trained
        pieces.append(tokenizer.decode([token]))
    if inside:
        pieces.append("⟧")
    text = "".join(pieces)
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2:]
