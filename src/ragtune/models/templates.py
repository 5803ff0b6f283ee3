"""Chat templates: the model's own, or ragtune's built-in ChatML and Alpaca, written into the saved tokenizer.

Training and inference render chats through the same Jinja template, so what the model learned to answer after
is exactly what it sees when served (transformers, vLLM, TGI all read `chat_template` from the tokenizer).
Both built-ins are prefix-stable: rendering the first k messages gives a prefix of rendering all of them, which
is how ragtune finds each assistant turn's tokens for the loss mask.
"""

from __future__ import annotations

import logging

from ragtune.errors import ConfigError

log = logging.getLogger(__name__)

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{% if not loop.first and messages[loop.index0 - 1]['role'] != 'system' %}{{ '\n\n' }}{% endif %}"
    "{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Response:\n' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)

TEMPLATES = {"chatml": CHATML, "alpaca": ALPACA}


def setup_template(tokenizer, name: str, extra_tokens: list[str] | None = None) -> tuple[str, list[str]]:
    """Give `tokenizer` the chat template `name` asks for; return the template used and the tokens added.

    auto: the tokenizer's own template when it has one, else ChatML. ChatML's <|im_start|>/<|im_end|> are added
    as special tokens when the vocabulary lacks them (the caller resizes the embeddings).
    """
    if name in ("auto", "model") and getattr(tokenizer, "chat_template", None):
        used = "model"
    elif name == "model":
        raise ConfigError("template=model, but the tokenizer has no chat template; use template=chatml or alpaca")
    else:
        used = "chatml" if name == "auto" else name
        tokenizer.chat_template = TEMPLATES[used]
    wanted = list(extra_tokens or [])
    if used == "chatml":
        wanted += [IM_START, IM_END]
    vocab = tokenizer.get_vocab()
    added = [t for t in dict.fromkeys(wanted) if t not in vocab]
    if added:
        tokenizer.add_special_tokens({"additional_special_tokens": added}, replace_extra_special_tokens=False)
        log.info("added special tokens %s to the tokenizer", added)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return used, added


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """Token ids that end a generated answer: EOS, plus <|im_end|> for ChatML."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if template == "chatml" or IM_END in tokenizer.get_vocab():
        ids.append(tokenizer.convert_tokens_to_ids(IM_END))
    return list(dict.fromkeys(ids))
