"""Turn per-token rewards into one score per sequence, with exact masking of pads.

Input ``rewards`` and ``mask`` have shape ``[..., K, T]``: K candidate sequences of the same
input, T token positions; ``mask`` is 1 on real tokens and 0 on pads. Output is ``[..., K]``.
With L_k the number of real tokens of candidate k and L̄ = mean_k L_k (the mean length of the
K candidates of the same input):

- ``sum``:     s_k = Σ_t r_kt
- ``avg``:     s_k = L̄ · (Σ_t r_kt / L_k)
- ``softmax``: s_k = L̄ · τ · log Σ_t exp(r_kt / τ)       (→ L̄ · max_t r_kt as τ → 0)
- ``softmin``: s_k = L̄ · (−τ) · log Σ_t exp(−r_kt / τ)   (→ L̄ · min_t r_kt as τ → 0)

All sums run over real tokens only. Multiplying by L̄ (one number per input, the same for all
K candidates) keeps the ordering of a mean/soft-max but puts scores on the scale of a sum, so
scores of short and long inputs are comparable and the loss sees a similar temperature; this
follows the paper's reference code. A candidate with no real tokens scores 0.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("avg", "sum", "softmax", "softmin")


def aggregate(
    rewards: torch.Tensor, mask: torch.Tensor, method: str = "avg", tau: float = 1.0
) -> torch.Tensor:
    """Aggregate ``rewards[..., K, T]`` over real tokens (``mask`` 1) into ``[..., K]`` scores."""
    if method not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {method!r}; use one of {', '.join(AGGREGATIONS)}")
    if rewards.shape != mask.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and mask {tuple(mask.shape)} must have the same shape"
        )
    if rewards.dim() < 2:
        raise ValueError(
            "rewards must have shape [..., K, T]: candidates of one input on the second-to-last axis"
        )
    real = mask.bool()
    zeros = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    total = torch.where(real, rewards, zeros).sum(-1)
    if method == "sum":
        return total
    lengths = real.sum(-1).to(rewards.dtype)
    mean_length = lengths.mean(-1, keepdim=True)
    nonempty = lengths > 0
    if method == "avg":
        per_token = total / lengths.clamp(min=1)
    else:
        if tau <= 0:
            raise ValueError(f"tau must be > 0 for {method}, got {tau}")
        sign = 1.0 if method == "softmax" else -1.0
        fill = torch.full((), -torch.inf, dtype=rewards.dtype, device=rewards.device)
        # Pads become -inf inside the logsumexp, so they contribute exactly exp(-inf) = 0.
        scaled = torch.where(real, sign * rewards / tau, fill)
        scaled = torch.where(nonempty.unsqueeze(-1), scaled, zeros)  # no all -inf rows: keeps grads finite
        soft = sign * tau * torch.logsumexp(scaled, dim=-1)
        per_token = torch.where(nonempty, soft, zeros)
    return per_token * mean_length
