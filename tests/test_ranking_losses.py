import itertools
import math

import pytest
import torch

from components.aggregation import aggregate
from components.ranking_losses import (
    bradley_terry_loss,
    kendall_tau,
    pairwise_accuracy,
    plackett_luce_loss,
    ranking_loss,
)


def _brute_force_nll(scores: list[float], order: list[int]) -> float:
    """-log P(order) under Plackett-Luce, term by term."""
    nll, remaining = 0.0, list(order)
    for k in order:
        nll -= scores[k] - math.log(sum(math.exp(scores[j]) for j in remaining))
        remaining.remove(k)
    return nll


@pytest.mark.parametrize("k", [2, 3, 4])
def test_plackett_luce_equals_brute_force_nll_of_true_permutation(k):
    g = torch.Generator().manual_seed(k)
    scores = torch.randn(5, k, generator=g, dtype=torch.float64) * 2
    preference = torch.stack([torch.randperm(k, generator=g) for _ in range(5)]).double()
    expected = [
        _brute_force_nll(scores[b].tolist(), preference[b].argsort(descending=True).tolist())
        for b in range(5)
    ]
    loss = plackett_luce_loss(scores, preference, generator=g)
    assert loss.item() == pytest.approx(sum(expected) / 5, rel=1e-9)
    # Sanity of the brute force itself: the K! permutation probabilities sum to one.
    total = sum(
        math.exp(-_brute_force_nll(scores[0].tolist(), list(p))) for p in itertools.permutations(range(k))
    )
    assert total == pytest.approx(1.0, rel=1e-9)


def test_plackett_luce_breaks_ties_at_random():
    scores = torch.tensor([[0.0, 2.0, 1.0]])
    preference = torch.tensor([[5.0, 1.0, 1.0]])  # candidate 0 best, 1 and 2 tied
    losses = {
        round(plackett_luce_loss(scores, preference, torch.Generator().manual_seed(s)).item(), 6)
        for s in range(40)
    }
    expected = {round(_brute_force_nll([0.0, 2.0, 1.0], order), 6) for order in ([0, 1, 2], [0, 2, 1])}
    assert losses == expected


def test_losses_are_stable_for_huge_scores():
    scores = torch.tensor([[1e4, -1e4, 3e4]], requires_grad=True)
    preference = torch.tensor([[3.0, 2.0, 1.0]])
    for name in ("listwise", "pairwise"):
        loss = ranking_loss(name, scores, preference)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()
        scores.grad = None


def test_appending_pads_changes_neither_aggregate_nor_loss():
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(2, 3, 5, generator=g)
    mask = torch.tensor([[[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]] * 2)
    preference = torch.tensor([[1.0, 3.0, 2.0], [2.0, 1.0, 3.0]])
    padded = torch.cat([rewards, torch.rand(2, 3, 4, generator=g)], dim=-1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, 4, dtype=torch.long)], dim=-1)
    for method in ("avg", "sum", "softmax", "softmin"):
        for name in ("listwise", "pairwise"):
            a = ranking_loss(
                name, aggregate(rewards, mask, method), preference, torch.Generator().manual_seed(1)
            )
            b = ranking_loss(
                name, aggregate(padded, padded_mask, method), preference, torch.Generator().manual_seed(1)
            )
            assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_bradley_terry_over_all_pairs_with_distinct_preference():
    scores = torch.tensor([[1.0, 0.0, 3.0]])
    preference = torch.tensor([[2.0, 2.0, 1.0]])  # pairs: 0>2, 1>2 (0~1 tied, skipped)
    expected = (math.log1p(math.exp(-(1.0 - 3.0))) + math.log1p(math.exp(-(0.0 - 3.0)))) / 2
    assert bradley_terry_loss(scores, preference).item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_all_ties_is_zero_but_differentiable():
    scores = torch.tensor([[1.0, 2.0]], requires_grad=True)
    loss = bradley_terry_loss(scores, torch.tensor([[1.0, 1.0]]))
    loss.backward()
    assert loss.item() == 0.0 and scores.grad.abs().sum() == 0


def test_ranking_loss_rejects_unknown_name_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown ranking loss"):
        ranking_loss("pointwise", torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        plackett_luce_loss(torch.zeros(2), torch.zeros(2))


def test_pairwise_accuracy_counts_only_distinct_preference_pairs():
    scores = torch.tensor([[3.0, 2.0, 1.0, 1.0]])
    preference = torch.tensor([[4.0, 1.0, 3.0, 3.0]])
    # pairs with distinct preference: (0,1) right, (0,2) right, (0,3) right, (2,1) wrong, (3,1) wrong
    assert pairwise_accuracy(scores, preference) == (3, 5)


def test_kendall_tau_matches_scipy_tau_b():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.randint(0, 4, (6,), generator=g).tolist()
        y = torch.randint(0, 4, (6,), generator=g).tolist()
        ours = kendall_tau(x, y)
        theirs = stats.kendalltau(x, y).statistic
        if math.isnan(theirs):
            assert ours is None
        else:
            assert ours == pytest.approx(theirs, abs=1e-12)
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None
