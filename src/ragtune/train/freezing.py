"""An encoder's transformer layers: keep only the first N, freeze the bottom, and reuse what the frozen bottom
computed.

With `train.freeze_layers=k` the token embeddings and the first k transformer layers never change, so the backward
pass stops above them and, for any text, their output is the same before and after training. `FrozenPrefixCache`
records that output while the base model is evaluated and replays it when the tuned model is evaluated, so the
second evaluation runs only the top layers. Replay is keyed by the exact token ids of each batch: a batch that was
not recorded runs in full, so the embeddings never depend on whether the cache hit.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

from ragtune.errors import ConfigError


def transformer_layers(encoder, setting: str = "train.freeze_layers"):
    """The encoder's list of transformer layers: the ModuleList as long as config.num_hidden_layers."""
    import torch

    depth = getattr(encoder.config, "num_hidden_layers", None)
    for module in encoder.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
            return module
    raise ConfigError(f"{setting}: no list of {depth} transformer layers found in {type(encoder).__name__}; "
                      f"leave {setting} unset for this model")


def keep_first_layers(encoder, layers: int | None) -> None:
    """Drop every transformer layer above the first `layers` (None keeps them all): a shallower, faster model
    that starts from the bottom of a deeper one. The config says the new depth, so the saved model loads as it is."""
    if not layers:
        return
    blocks = transformer_layers(encoder, "model.num_layers")
    if layers > len(blocks):
        raise ConfigError(f"model.num_layers={layers}: the model has only {len(blocks)} transformer layers; "
                          f"use at most {len(blocks)}")
    del blocks[layers:]
    encoder.config.num_hidden_layers = layers


def _embeddings(encoder):
    return getattr(encoder, "embeddings", None) or encoder.get_input_embeddings()


def freeze_bottom(model, layers: int) -> None:
    """Freeze the token embeddings and the first `layers` transformer layers of a SentenceTransformer."""
    if layers <= 0:
        return
    encoder = model[0].auto_model
    blocks = transformer_layers(encoder)
    if layers >= len(blocks):
        raise ConfigError(f"train.freeze_layers={layers} leaves nothing to train: the model has {len(blocks)} "
                          f"layers; use at most {len(blocks) - 1}")
    _embeddings(encoder).requires_grad_(False)
    for block in blocks[:layers]:
        block.requires_grad_(False)


def _ids_key(args: tuple, kwargs: dict) -> str | None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is None:
        return None
    return f"{tuple(ids.shape)}:{hashlib.sha1(ids.detach().cpu().numpy().tobytes()).hexdigest()}"


class FrozenPrefixCache:
    """Hidden states after the frozen bottom of a SentenceTransformer's encoder, per batch of token ids.

    With `layers=0` it does nothing. Layers must return a tensor (transformers 5); with older layers that return
    tuples nothing is recorded, and nothing is replayed."""

    def __init__(self, model, layers: int, max_bytes: int = 2 << 30):
        encoder = model[0].auto_model
        self.embeddings = _embeddings(encoder)
        self.blocks = list(transformer_layers(encoder))[:layers] if layers > 0 else []
        self.max_bytes = max_bytes
        self.states: dict = {}
        self.bytes = 0
        self.hits = self.misses = 0
        self._key: str | None = None
        self._replay = False

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Remember the output of the last frozen layer for every batch run inside the block (up to max_bytes)."""
        import torch

        if not self.blocks:
            yield
            return

        def note_ids(module, args, kwargs):
            self._key = _ids_key(args, kwargs)

        def keep(module, args, output):
            if self._key and torch.is_tensor(output) and self.bytes + output.nbytes <= self.max_bytes:
                self.states[self._key] = output.detach().clone()
                self.bytes += output.nbytes

        hooks = [self.embeddings.register_forward_pre_hook(note_ids, with_kwargs=True),
                 self.blocks[-1].register_forward_hook(keep)]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Inside the block, a recorded batch skips the embeddings and the frozen layers."""
        if not self.states:
            yield
            return
        self.hits = self.misses = 0
        embed = self.embeddings.forward

        def embeddings(*args, **kwargs):
            state = self.states.get(_ids_key(args, kwargs))
            self._replay = state is not None
            self.hits += self._replay
            self.misses += not self._replay
            return state if self._replay else embed(*args, **kwargs)

        def passing(forward):
            def run(hidden_states, *args, **kwargs):
                return hidden_states if self._replay else forward(hidden_states, *args, **kwargs)

            return run

        self.embeddings.forward = embeddings
        for block in self.blocks:
            block.forward = passing(block.forward)
        try:
            yield
        finally:
            self._replay = False
            for module in (self.embeddings, *self.blocks):
                module.__dict__.pop("forward", None)

    def summary(self) -> str:
        return (f"frozen layers: {self.hits} of {self.hits + self.misses} batches reused the base model's "
                f"hidden states ({self.bytes / 2**20:.0f} MiB)")
