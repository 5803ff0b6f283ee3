"""SFT data formats: detect each from its fields and turn every record into a chat, a prompt/completion or a text.

| format            | fields                                   | becomes                                     |
|-------------------|------------------------------------------|---------------------------------------------|
| chat              | messages: [{role, content}, ...]         | chat (system optional, then user/assistant) |
| hh                | chosen: "\\n\\nHuman: ...\\n\\nAssistant: ..." | chat                                    |
| alpaca            | instruction, input (optional), output    | chat: user = instruction + input            |
| instruction       | instruction, response                    | chat                                        |
| prompt_completion | prompt, completion                       | raw prompt + completion (completion trained)|
| text              | text                                     | raw text, every token trained               |
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from ragtune.errors import DataError
from ragtune.ingest.readers import Row

# Each format: the roles it needs (role -> default field), most specific first.
FIELDS: dict[str, dict[str, str]] = {
    "chat": {"messages": "messages"},
    "hh": {"chosen": "chosen"},
    "alpaca": {"instruction": "instruction", "output": "output"},
    "instruction": {"instruction": "instruction", "response": "response"},
    "prompt_completion": {"prompt": "prompt", "completion": "completion"},
    "text": {"text": "text"},
}
OPTIONAL = {"alpaca": {"input": "input"}, "chat": {}, "hh": {}, "instruction": {}, "prompt_completion": {},
            "text": {}}
ROLES = ("system", "user", "assistant")
log = logging.getLogger(__name__)
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


@dataclass
class SFTExample:
    """One training record: a chat (messages), or raw prompt/completion, or raw text."""

    kind: str  # chat | completion | text
    origin: str  # file:line
    messages: list[dict[str, str]] | None = None
    prompt: str = ""
    completion: str = ""

    @property
    def reference(self) -> str:
        """The answer a model should produce (for generation metrics)."""
        if self.kind == "chat":
            return self.messages[-1]["content"]
        return self.completion

    @property
    def context(self) -> list[dict[str, str]] | str:
        """What the model sees before the reference answer."""
        return self.messages[:-1] if self.kind == "chat" else self.prompt


def detect_sft_format(row: Row, columns: dict[str, str]) -> str:
    for name, needs in FIELDS.items():
        if all(columns.get(role, field) in row.data for role, field in needs.items()):
            return name
    raise DataError(f"{row.where}: cannot tell the SFT format from fields {sorted(row.data)}; use messages (chat), "
                    "instruction/input/output (alpaca), instruction/response, prompt/completion, text, or a "
                    "Human/Assistant transcript in 'chosen'; or map yours with data.columns (e.g. "
                    "data.columns.output=answer)")


class EmptyRecord(DataError):
    """A record whose answer (or text) is empty: skipped with a count, not fatal."""


def _text(row: Row, field: str, value: Any, allow_empty: bool = False) -> str:
    row.string(field, value)
    if not allow_empty and not value.strip():
        raise EmptyRecord(f"{row.where}: field '{field}' is empty")
    return value


def check_chat(messages: Any, where: str, field: str = "messages") -> list[dict[str, str]]:
    """A chat is [system?] user assistant (user assistant)*: alternating, ending on an assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of {{role, content}} objects")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataError(f"{where}: {field}[{i}] must be an object with 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise DataError(f"{where}: {field}[{i}].role is {role!r}; use system, user or assistant")
        if not isinstance(content, str):
            raise DataError(f"{where}: {field}[{i}].content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    turns = out[1:] if out[0]["role"] == "system" else out
    if not any(m["role"] == "assistant" for m in turns):
        raise DataError(f"{where}: the chat has no assistant turn, so there is nothing to train on; add the "
                        "assistant's answer or drop the record")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            position = i + (len(out) - len(turns))
            raise DataError(f"{where}: {field}[{position}] is a {message['role']} turn where a {expected} turn "
                            "belongs; a chat is an optional system message, then user and assistant turns in turn")
    if turns[-1]["role"] != "assistant":
        turns = turns[:-1]  # a trailing user turn has no answer to learn
        out = out[: len(out) - 1]
    return out


def hh_to_chat(transcript: str, where: str) -> list[dict[str, str]]:
    """Split a `\\n\\nHuman: ...\\n\\nAssistant: ...` transcript into user/assistant messages."""
    parts = HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise DataError(f"{where}: field 'chosen' is not a Human/Assistant transcript (it must start with "
                        "'\\n\\nHuman: ')")
    messages = [{"role": "user" if speaker == "Human" else "assistant", "content": text.strip()}
                for speaker, text in zip(parts[1::2], parts[2::2])]
    return check_chat(messages, where, "chosen")


def to_example(row: Row, fmt: str, columns: dict[str, str], system_prompt: str | None = None) -> SFTExample:
    field = {role: columns.get(role, default) for role, default in {**FIELDS[fmt], **OPTIONAL[fmt]}.items()}
    for role, name in FIELDS[fmt].items():
        if field[role] not in row.data or row.data[field[role]] is None:
            raise DataError(f"{row.where}: missing field '{field[role]}' ({fmt} records need "
                            f"{sorted(field[r] for r in FIELDS[fmt])}); add it or drop the record")
    data, where = row.data, row.where
    if fmt == "prompt_completion":
        return SFTExample("completion", where, prompt=_text(row, field["prompt"], data[field["prompt"]], True),
                          completion=_text(row, field["completion"], data[field["completion"]]))
    if fmt == "text":
        return SFTExample("text", where, completion=_text(row, field["text"], data[field["text"]]))
    if fmt == "chat":
        messages = check_chat(data[field["messages"]], where, field["messages"])
    elif fmt == "hh":
        messages = hh_to_chat(_text(row, field["chosen"], data[field["chosen"]]), where)
    else:
        instruction = _text(row, field["instruction"], data[field["instruction"]])
        extra = data.get(field.get("input", "input")) or ""
        user = f"{instruction}\n\n{_text(row, field['input'], extra, True)}" if extra else instruction
        answer_field = field["output"] if fmt == "alpaca" else field["response"]
        messages = [{"role": "user", "content": user},
                    {"role": "assistant", "content": _text(row, answer_field, data[answer_field])}]
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}] + messages
    return SFTExample("chat", where, messages=messages)


def load_sft_examples(rows: list[Row], fmt: str = "auto", columns: dict[str, str] | None = None,
                      system_prompt: str | None = None) -> tuple[str, list[SFTExample]]:
    """Detect (or check) the format and convert every row; each bad row names its file, line and field."""
    columns = columns or {}
    if fmt not in ("auto", *FIELDS):
        raise DataError(f"data.format '{fmt}' is unknown; use auto, {', '.join(FIELDS)}")
    detected = detect_sft_format(rows[0], columns) if fmt == "auto" else fmt
    examples, empty = [], []
    for row in rows:
        try:
            examples.append(to_example(row, detected, columns, system_prompt))
        except EmptyRecord as exc:
            empty.append(str(exc))
    if not examples:
        raise DataError(f"{rows[0].path}: every record is empty ({empty[0]}); nothing to train on")
    if empty:
        log.warning("%d records with an empty answer or text were skipped (first: %s)", len(empty), empty[0])
    return detected, examples


def load_sft_data(data, seed: int = 42) -> tuple[str, list[SFTExample], list[SFTExample]]:
    """The training and held-out examples a config names: data.eval, or a seeded fraction held out."""
    import random

    from ragtune.errors import ConfigError
    from ragtune.ingest.readers import read_rows

    if not data.train:
        raise ConfigError("data.train is not set; give a JSONL/JSON/CSV/Parquet file or a folder (data.train=PATH)")
    fmt, train = load_sft_examples(read_rows(data.train), data.format, data.columns, data.system_prompt)
    if data.eval:
        _, held_out = load_sft_examples(read_rows(data.eval), fmt, data.columns, data.system_prompt)
    else:
        if len(train) < 2:
            raise DataError(f"{data.train}: only {len(train)} record; give data.eval or more data")
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        cut = max(1, round(len(train) * data.eval_fraction))
        held_out = [train[i] for i in sorted(order[:cut])]
        train = [train[i] for i in sorted(order[cut:])]
    if data.max_train_samples:
        train = train[: data.max_train_samples]
    if data.max_eval_samples:
        held_out = held_out[: data.max_eval_samples]
    return fmt, train, held_out


def describe(cfg) -> str:
    """What an llm config's data holds, loaded as the recipe loads it (for `ragtune doctor`)."""
    fmt, train, held_out = load_sft_data(cfg.data, cfg.train.seed)
    return f"{len(train)} {fmt} training examples, {len(held_out)} held out"
