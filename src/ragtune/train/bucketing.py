"""Length-bucketed training forward: the same gradients with far less padding.

A collated batch pads every text of a column to the longest one. During training ragtune re-splits each column's
batch into chunks of similar length (longest first, about `tokens_per_chunk` tokens each), trims each chunk's
padding, runs the encoder per chunk and puts the embeddings back in their original order. Mean/CLS pooling ignores
padding, so the embeddings, the loss and the gradients equal the padded computation; only the wasted work goes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def _take(value, index: torch.Tensor, batch: int, width: int, length: int):
    if not torch.is_tensor(value) or value.dim() == 0 or value.shape[0] != batch:
        return value
    value = value[index]
    return value[:, :length] if value.dim() >= 2 and value.shape[1] == width else value


def bucketed_forward(forward, tokens_per_chunk: int):
    """Wrap a SentenceTransformer forward so that, in training mode, it runs length-sorted chunks."""

    def run(features: dict, **kwargs):
        mask = features.get("attention_mask")
        if not torch.is_grad_enabled() or mask is None or mask.dim() != 2 or mask.shape[0] < 4:
            return forward(features, **kwargs)
        batch, width = mask.shape
        lengths = mask.sum(dim=1)
        order = torch.argsort(lengths, descending=True, stable=True)
        indices, embeddings, start = [], [], 0
        while start < batch:
            longest = int(lengths[order[start]])
            index = order[start:start + max(1, tokens_per_chunk // max(longest, 1))]
            start += len(index)
            chunk = {k: _take(v, index, batch, width, longest) for k, v in features.items()}
            indices.append(index)
            embeddings.append(forward(chunk, **kwargs)["sentence_embedding"])
        restore = torch.argsort(torch.cat(indices))
        out = dict(features)
        out["sentence_embedding"] = torch.cat(embeddings)[restore]
        return out

    return run


@contextmanager
def length_bucketing(model, enabled: bool = True, tokens_per_chunk: int = 4096) -> Iterator[None]:
    """Install the bucketed forward on `model` for the duration of training."""
    if not enabled:
        yield
        return
    model.forward = bucketed_forward(type(model).forward.__get__(model), tokens_per_chunk)
    try:
        yield
    finally:
        del model.forward
