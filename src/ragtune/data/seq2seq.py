"""Seq2seq data: source/target records (with optional language codes), or two line-aligned text files.

Language codes follow the model: NLLB (eng_Latn), mBART (en_XX) and M2M100 (en, as __en__) tokenizers set the
source language on the input and force the target language as the first generated token. Other models (T5,
Marian) see `source_prefix`, which may name the languages: "translate {source_lang} to {target_lang}: ".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ragtune.errors import ConfigError, DataError
from ragtune.ingest.readers import Row, read_rows, read_text, text_lines

SPELLINGS = [("source_text", "target_text"), ("source", "target"), ("src", "tgt"), ("input", "output")]


@dataclass
class Pair:
    source: str
    target: str
    source_lang: str | None
    target_lang: str | None
    origin: str


def _field(row: Row, name: str, optional: bool = False) -> str | None:
    value = row.data.get(name)
    if value is None:
        if optional:
            return None
        raise DataError(f"{row.where}: missing field '{name}'; every record needs source and target text")
    row.string(name, value)
    if not optional and not value.strip():
        raise DataError(f"{row.where}: field '{name}' is empty; fill it or drop the record")
    return value


def pairs_from_rows(rows: list[Row], columns: dict[str, str], source_lang: str | None,
                    target_lang: str | None) -> list[Pair]:
    first = rows[0].data
    spelling = next(((s, t) for s, t in SPELLINGS if s in first and t in first), None)
    source_field = columns.get("source", spelling[0] if spelling else "source_text")
    target_field = columns.get("target", spelling[1] if spelling else "target_text")
    if source_field not in first or target_field not in first:
        raise DataError(f"{rows[0].where}: cannot find source/target fields in {sorted(first)}; use source_text/"
                        "target_text (optional source_lang/target_lang), or map yours with data.columns.source=... "
                        "data.columns.target=...")
    return [Pair(_field(r, source_field), _field(r, target_field),
                 _field(r, "source_lang", True) or source_lang, _field(r, "target_lang", True) or target_lang,
                 r.where) for r in rows]


def pairs_from_files(source: str, target: str, source_lang: str | None, target_lang: str | None) -> list[Pair]:
    """Line i of `source` translates line i of `target` (plain or .gz text)."""
    left = text_lines(read_text(Path(source)))
    right = text_lines(read_text(Path(target)))
    if len(left) != len(right):
        raise DataError(f"{source} has {len(left)} lines but {target} has {len(right)}; line-aligned files must "
                        "have the same number of lines")
    if not left:
        raise DataError(f"{source}: no lines; the file is empty")
    pairs = []
    for number, (s, t) in enumerate(zip(left, right), start=1):
        if not s.strip() or not t.strip():
            raise DataError(f"{source if not s.strip() else target}:{number}: empty line; every line needs text on "
                            "both sides")
        pairs.append(Pair(s, t, source_lang, target_lang, f"{source}:{number}"))
    return pairs


def load_pairs(path: str, target: str | None, columns: dict[str, str], source_lang: str | None,
               target_lang: str | None) -> list[Pair]:
    if target:
        return pairs_from_files(path, target, source_lang, target_lang)
    return pairs_from_rows(read_rows(path), columns, source_lang, target_lang)


def load_seq2seq_data(data, source_lang: str | None, target_lang: str | None,
                      seed: int = 42) -> tuple[list[Pair], list[Pair]]:
    if not data.train:
        raise ConfigError("data.train is not set; give a JSONL file (source_text/target_text) or a source text file "
                          "with data.train_target")
    train = load_pairs(data.train, data.train_target, data.columns, source_lang, target_lang)
    if data.eval:
        held_out = load_pairs(data.eval, data.eval_target, data.columns, source_lang, target_lang)
    else:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        cut = max(1, round(len(train) * data.eval_fraction))
        held_out, train = [train[i] for i in sorted(order[:cut])], [train[i] for i in sorted(order[cut:])]
    if data.max_train_samples:
        train = train[: data.max_train_samples]
    if data.max_eval_samples:
        held_out = held_out[: data.max_eval_samples]
    return train, held_out


LANGUAGE_CODE_MODELS = ("m2m_100", "nllb", "nllb-moe", "mbart", "mbart50")


def uses_language_codes(model_type: str, tokenizer) -> bool:
    return model_type in LANGUAGE_CODE_MODELS or hasattr(tokenizer, "lang_code_to_id")


def language_token(tokenizer, code: str) -> str:
    """The vocabulary token for a language code (NLLB/mBART as is, M2M100 as __xx__); a clear error if unknown."""
    vocab = tokenizer.get_vocab()
    for candidate in (code, f"__{code}__"):
        if candidate in vocab:
            return candidate
    import difflib

    known = [t for t in tokenizer.all_special_tokens if "_" in t and not t.startswith("<")]
    close = difflib.get_close_matches(code, known, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ConfigError(f"unknown language code '{code}' for this model{hint}; it knows codes like "
                      f"{', '.join(known[:6]) or 'none (it does not use language codes)'}")


@dataclass
class Encoder:
    """Tokenizes pairs for a model: source prefix or language codes, truncation, target labels."""

    tokenizer: object
    model_type: str
    prefix: str = ""
    max_source_length: int = 256
    max_target_length: int = 256

    @property
    def language_codes(self) -> bool:
        return uses_language_codes(self.model_type, self.tokenizer)

    def check_languages(self, pairs: list[Pair]) -> None:
        if not self.language_codes:
            return
        for pair in pairs:
            for code in (pair.source_lang, pair.target_lang):
                if code is None:
                    raise ConfigError(f"{pair.origin}: this model uses language codes; set source_lang/target_lang "
                                      "in the config or on every record (e.g. eng_Latn, deu_Latn)")
                language_token(self.tokenizer, code)

    def source_text(self, pair: Pair) -> str:
        prefix = self.prefix.format(source_lang=pair.source_lang or "", target_lang=pair.target_lang or "")
        return prefix + pair.source

    def encode(self, pair: Pair) -> dict:
        tokenizer = self.tokenizer
        if self.language_codes:
            tokenizer.src_lang, tokenizer.tgt_lang = pair.source_lang, pair.target_lang
        encoded = tokenizer(self.source_text(pair), text_target=pair.target, truncation=True,
                            max_length=self.max_source_length)
        labels = tokenizer(text_target=pair.target, truncation=True, max_length=self.max_target_length)["input_ids"]
        return {"input_ids": encoded["input_ids"], "labels": labels}

    def forced_bos(self, pair: Pair) -> int | None:
        if not self.language_codes or pair.target_lang is None:
            return None
        return self.tokenizer.convert_tokens_to_ids(language_token(self.tokenizer, pair.target_lang))


def describe(cfg) -> str:
    """What a seq2seq config's data holds, loaded as the recipe loads it (for `ragtune doctor`)."""
    train, held_out = load_seq2seq_data(cfg.data, cfg.source_lang, cfg.target_lang, cfg.train.seed)
    return f"{len(train)} training pairs, {len(held_out)} held out"
