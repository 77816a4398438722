"""Losses that teach aggregated sequence scores to order K candidates like a preference,
plus the ranking metrics used to judge them.

``scores[B, K]``: model scores of the K candidates of each of B inputs (higher = better).
``preference[B, K]``: the true sequence-level preference (higher = better); only its order
matters.

Listwise (Plackett-Luce / ListMLE). Sort candidates by preference, best first: π(1..K). The
negative log-likelihood of that permutation is

    L = Σ_{i=1..K} [ log Σ_{j=i..K} exp(s_π(j)) − s_π(i) ]

Equal preferences are ordered at random (a fresh shuffle per call), so ties carry no signal
on average.

Pairwise (Bradley-Terry). Over all pairs (i, j) of one input with preference_i > preference_j:

    L = mean over pairs of −log σ(s_i − s_j)

Both losses are means over the batch (listwise: per list; pairwise: per valid pair).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("listwise", "pairwise")


def _check(scores: torch.Tensor, preference: torch.Tensor) -> None:
    if scores.dim() != 2 or scores.shape != preference.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and preference {tuple(preference.shape)} must both be [B, K]"
        )


def plackett_luce_loss(
    scores: torch.Tensor, preference: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mean Plackett-Luce NLL of the preference order; ties broken at random with ``generator``."""
    _check(scores, preference)
    k = scores.shape[1]
    shuffle = torch.randperm(k, generator=generator).to(scores.device)
    scores, preference = scores[:, shuffle], preference[:, shuffle].to(scores.device)
    order = preference.argsort(dim=1, descending=True, stable=True)
    ranked = scores.gather(1, order)
    # log Σ_{j>=i} exp(s_j): logcumsumexp over the reversed list, reversed back.
    tail_logsumexp = ranked.flip(1).logcumsumexp(1).flip(1)
    return (tail_logsumexp - ranked).sum(1).mean()


def bradley_terry_loss(scores: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """Mean −log σ(s_i − s_j) over all pairs with preference_i > preference_j (0 if there are none)."""
    _check(scores, preference)
    preference = preference.to(scores.device)
    better = preference.unsqueeze(2) > preference.unsqueeze(1)  # [B, K, K]: i preferred to j
    margins = scores.unsqueeze(2) - scores.unsqueeze(1)
    if not better.any():
        return scores.sum() * 0.0  # all ties: no signal, but keep the graph
    return F.softplus(-margins[better]).mean()


def ranking_loss(
    name: str, scores: torch.Tensor, preference: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``listwise`` (Plackett-Luce) or ``pairwise`` (Bradley-Terry)."""
    if name == "listwise":
        return plackett_luce_loss(scores, preference, generator)
    if name == "pairwise":
        return bradley_terry_loss(scores, preference)
    raise ValueError(f"unknown ranking loss {name!r}; use one of {', '.join(LOSSES)}")


def pairwise_accuracy(scores: torch.Tensor, preference: torch.Tensor) -> tuple[int, int]:
    """(correct, total) over pairs with distinct preference; a score tie counts as wrong."""
    _check(scores, preference)
    better = preference.unsqueeze(2) > preference.unsqueeze(1)
    right = scores.unsqueeze(2) > scores.unsqueeze(1)
    return int((better & right).sum()), int(better.sum())


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b between two score lists (handles ties); None if either list is constant."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau needs equal lengths, got {len(x)} and {len(y)}")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    if denominator == 0:
        return None
    return (concordant - discordant) / denominator
