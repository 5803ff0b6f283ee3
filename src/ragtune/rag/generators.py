"""Answer generators behind one interface: a local transformers causal LM, or an OpenAI-compatible endpoint
(vLLM, TGI, llama.cpp server, ...) speaking the chat-completions protocol."""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterator, Protocol

from ragtune.errors import ConfigError, GeneratorError

log = logging.getLogger(__name__)


@dataclass
class Reply:
    text: str
    label_logprobs: dict[str, float] | None = None  # log-likelihood of each label as the answer's start


class Generator(Protocol):
    name: str

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int = 256,
                 temperature: float = 0.0) -> str: ...

    def generate_many(self, conversations: list[list[dict[str, str]]], max_new_tokens: int = 256,
                      labels: list[str] | None = None) -> list[Reply]: ...


class LocalGenerator:
    """A transformers causal LM (a hub id, a local folder, a merged ragtune model or a ragtune LoRA run).

    On a CPU whose `auto` precision is open, generation runs in bf16 where it measured faster here (`settle`)."""

    def __init__(self, model: str, placement=None, batch_size: int = 8):
        import torch

        from ragtune.models.device import choose_placement, settle
        from ragtune.models.language_model import load_for_inference, prepare_chat

        self.name, self.batch_size = model, batch_size
        placement = placement or choose_placement()
        self.model, self.tokenizer = load_for_inference(model, placement)
        # A model without a chat template gets ChatML and its tokens, as `train llm` would give it.
        _, _, self.stops = prepare_chat(self.model, self.tokenizer)
        self.placement = settle(placement, self.model, "generate")
        if self.placement.device == "cpu" and self.placement.precision == "bf16":
            self.model.to(torch.bfloat16)
        self.window = getattr(self.model.config, "max_position_embeddings", None)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int = 256, temperature: float = 0.0) -> str:
        return self.generate_many([messages], max_new_tokens)[0].text

    def _fit(self, prompt: str, max_new_tokens: int) -> str:
        """The prompt as is, or its last tokens (with a warning) where it and the answer would overrun the window."""
        if not self.window:
            return prompt
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        room = self.window - max_new_tokens
        if len(ids) <= room:
            return prompt
        log.warning("prompt of %d tokens + %d new tokens exceeds %s's %d positions; keeping its last %d tokens",
                    len(ids), max_new_tokens, self.name, self.window, room)
        return self.tokenizer.decode(ids[-room:])

    def generate_many(self, conversations: list[list[dict[str, str]]], max_new_tokens: int = 256,
                      labels: list[str] | None = None) -> list[Reply]:
        """Greedy answers in batches; with `labels`, each label's likelihood as the start of the answer too."""
        from ragtune.models.language_model import chat_prompt, generate_text, label_first_tokens

        prompts = [self._fit(chat_prompt(self.tokenizer, m), max_new_tokens) for m in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        starts = label_first_tokens(self.tokenizer, labels) if labels else None
        first: list | None = [] if starts else None
        texts = generate_text(self.model, self.tokenizer, [prompts[i] for i in order], max_new_tokens, self.stops,
                              self.batch_size, first_step=first)
        replies: list[Reply | None] = [None] * len(prompts)
        for rank, i in enumerate(order):
            scores = {label: float(first[rank][ids].logsumexp(0)) for label, ids in starts.items()} if starts else None
            replies[i] = Reply(texts[rank], scores)
        return replies


    def stream(self, messages: list[dict[str, str]], max_new_tokens: int = 256) -> Iterator[str]:
        """The greedy answer as it is generated, piece by piece (transformers' TextIteratorStreamer)."""
        import threading

        from transformers import TextIteratorStreamer

        from ragtune.models.language_model import chat_prompt, generate_text

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        prompt = self._fit(chat_prompt(self.tokenizer, messages), max_new_tokens)
        worker = threading.Thread(target=generate_text, daemon=True, args=(
            self.model, self.tokenizer, [prompt], max_new_tokens, self.stops, 1), kwargs={"streamer": streamer})
        worker.start()
        yield from (piece for piece in streamer if piece)
        worker.join()


class OpenAIGenerator:
    """POST {base_url}/chat/completions with bounded retries; every failure ends in one GeneratorError."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.5):
        self.base_url, self.name, self.api_key = base_url.rstrip("/"), model, api_key
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def _open(self, payload: dict):
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {self.api_key}"}
                                                     if self.api_key else {})})
        return urllib.request.urlopen(request, timeout=self.timeout)

    def _post(self, payload: dict) -> dict:
        deadline = time.monotonic() + self.timeout
        body = bytearray()
        with self._open(payload) as response:
            # read1 returns what one receive brings, so a server that trickles bytes cannot outlast the deadline
            while chunk := response.read1(1 << 16):
                body += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out: no complete reply within {self.timeout:g} s")
            if response.length:  # the connection closed before the promised Content-Length
                raise http.client.IncompleteRead(bytes(body), response.length)
        return json.loads(body.decode("utf-8"))

    def _with_retries(self, call):
        """`call()`, retried with backoff on server errors and broken replies; every failure ends in one
        GeneratorError."""
        problem = ""
        for attempt in range(1, self.retries + 1):
            try:
                return call()
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code} {exc.reason}"
                if exc.code < 500 and exc.code != 429:
                    break  # a client error does not get better by asking again
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                problem = f"unreachable ({getattr(exc, 'reason', exc)})"
            except http.client.HTTPException as exc:  # not HTTP at all, or the reply broke off
                problem = f"a broken HTTP reply ({type(exc).__name__}: {exc})"
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                problem = f"a reply that is not a chat completion ({type(exc).__name__}: {exc})"
            if attempt < self.retries:  # the last failure is the error itself
                wait = self.backoff * 2 ** (attempt - 1)
                log.warning("generator %s: attempt %d of %d failed: %s; retrying in %.0f s", self.base_url, attempt,
                            self.retries, problem, wait)
                time.sleep(wait)
        raise self._failed(f"{problem} after {self.retries} attempts")

    def _failed(self, problem: str) -> GeneratorError:
        return GeneratorError(f"generator endpoint {self.base_url} (model '{self.name}'): {problem}; check that the "
                              "server is up and speaks /chat/completions, or use --no-generate for retrieval only")

    def _payload(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float, **extra) -> dict:
        return {"model": self.name, "messages": messages, "max_tokens": max_new_tokens, "temperature": temperature,
                **extra}

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int = 256, temperature: float = 0.0) -> str:
        payload = self._payload(messages, max_new_tokens, temperature)

        def ask() -> str:
            content = self._post(payload)["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not text")
            return content.strip()

        return self._with_retries(ask)

    def stream(self, messages: list[dict[str, str]], max_new_tokens: int = 256,
               temperature: float = 0.0) -> Iterator[str]:
        """The reply piece by piece as the endpoint sends it (`"stream": true`, server-sent events). Retried until
        the first piece arrives; a stream that breaks after that ends in one GeneratorError. An endpoint that
        ignores `stream` and answers with one JSON completion gives that answer as one piece."""
        payload = self._payload(messages, max_new_tokens, temperature, stream=True)

        def first():
            response = self._open(payload)
            kind = response.headers.get("Content-Type") or ""
            if "json" in kind and "event-stream" not in kind:
                with response:
                    content = json.loads(response.read().decode("utf-8"))["choices"][0]["message"]["content"]
                return None, iter([content] if isinstance(content, str) and content else [])
            pieces = _sse_pieces(response)
            try:
                head = next(pieces, None)
            except BaseException:
                response.close()
                raise
            return response, itertools.chain([head] if head else [], pieces)

        response, pieces = self._with_retries(first)
        if response is None:
            yield from pieces
            return
        try:
            with response:
                yield from pieces
        except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._failed(f"the stream broke off ({type(exc).__name__}: {exc})") from None

    def generate_many(self, conversations: list[list[dict[str, str]]], max_new_tokens: int = 256,
                      labels: list[str] | None = None) -> list[Reply]:
        """One request per conversation; an endpoint returns no likelihoods, so labels are read from the text."""
        return [Reply(self.generate(m, max_new_tokens)) for m in conversations]

    def count_tokens(self, text: str) -> int:
        return int(len(text.split()) * 1.3) + 1  # no tokenizer at hand: a conservative word-based estimate


GENERATION_SLICE = 32  # conversations per counted slice (a local model still batches inside each)


def generate_counted(generator, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                     labels: list[str] | None = None, what: str = "Generating") -> list[Reply]:
    """`generator.generate_many` over every conversation, a slice at a time, with progress (a bar on a terminal); a
    generator without generate_many answers one conversation at a time."""
    from ragtune.progress import in_slices

    def answer(part: list) -> list[Reply]:
        if hasattr(generator, "generate_many"):
            return generator.generate_many(part, max_new_tokens, labels)
        return [Reply(generator.generate(c, max_new_tokens=max_new_tokens)) for c in part]

    return [reply for part in in_slices(what, conversations, GENERATION_SLICE, answer) for reply in part]


def _sse_pieces(response) -> Iterator[str]:
    """The `delta.content` of each `data:` event of an OpenAI chat stream, until `data: [DONE]` or the end; an
    error event, a malformed event or a reply with no event at all is a ValueError."""
    events = 0
    for raw in iter(response.readline, b""):
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue  # blank separators, comments, event names
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        events += 1
        event = json.loads(data)
        if not isinstance(event, dict):
            raise ValueError(f"an event that is not a JSON object: {data[:80]}")
        if event.get("error"):
            raise ValueError(f"the endpoint sent an error: {str(event['error'])[:200]}")
        choices = event.get("choices") or []
        delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
        piece = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(piece, str) and piece:
            yield piece
    if not events:
        raise ValueError("a reply with no server-sent event in it")


def _env_number(name: str, default, kind):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not math.isfinite(value) or value <= 0 or value > 86400:
        raise ConfigError(f"{name}={raw!r} is not a positive {'number' if kind is float else 'whole number'} up to "
                          f"86400; unset it or give one, e.g. {name}={default}")
    return value


def make_generator(spec: str, model_name: str | None = None, api_key: str | None = None,
                   timeout: float | None = None, retries: int | None = None, placement=None) -> Generator:
    """`http(s)://...` is an OpenAI-compatible endpoint (model name required); anything else a local model.

    For an endpoint, what is not given comes from the environment: OPENAI_API_KEY (sent as a bearer token),
    RAGTUNE_GENERATOR_TIMEOUT (seconds, default 60: for connecting, each wait, and the whole reply of one attempt)
    and RAGTUNE_GENERATOR_RETRIES (attempts, default 3)."""
    if spec.startswith(("http://", "https://")):
        if not model_name:
            raise GeneratorError(f"--generator {spec} is an endpoint; name the served model with --generator-model "
                                 "(e.g. the name vLLM was started with)")
        return OpenAIGenerator(spec, model_name, api_key or os.environ.get("OPENAI_API_KEY") or None,
                               timeout or _env_number("RAGTUNE_GENERATOR_TIMEOUT", 60.0, float),
                               retries or _env_number("RAGTUNE_GENERATOR_RETRIES", 3, int))
    from ragtune.clara.generator import ClaraGenerator, clara_folder

    if clara_folder(spec) is not None:  # a `ragtune train clara` run reads passages as memory vectors
        return ClaraGenerator(spec, placement)
    return LocalGenerator(spec, placement)
