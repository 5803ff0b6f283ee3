"""CLaRa stage 3's differentiable top-k: the forward pass picks the k best candidates exactly (a hard top-k), and
the backward pass takes the gradient of a softmax over the scores at a low temperature (straight-through), so the
generator's loss reaches the query adapter that scored the candidates."""

from __future__ import annotations

import torch


def select_top_k(scores: torch.Tensor, k: int, temperature: float = 0.02) -> torch.Tensor:
    """(b, k, n) selection matrices from scores (b, n): row j of example i is the one-hot of its j-th best
    candidate in the forward pass, with the gradient of softmax(scores / temperature) in the backward pass.
    `selection @ candidates` (b, n, d) gives the k chosen candidates, in order, differentiably."""
    if not 0 < k <= scores.shape[-1]:
        raise ValueError(f"top_k: {k} is not between 1 and the {scores.shape[-1]} candidates")
    soft = torch.softmax(scores / temperature, dim=-1)  # (b, n)
    hard = torch.nn.functional.one_hot(scores.topk(k, dim=-1).indices, scores.shape[-1]).to(soft.dtype)  # (b, k, n)
    return hard + (soft - soft.detach()).unsqueeze(1)
