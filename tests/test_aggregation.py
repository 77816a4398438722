import pytest
import torch

from components.aggregation import AGGREGATIONS, aggregate


def _group(lengths, t=None, seed=0):
    """Rewards [K, T] with random values everywhere (pads included) and the matching mask."""
    g = torch.Generator().manual_seed(seed)
    t = t or max(lengths)
    rewards = torch.rand(len(lengths), t, generator=g) * 2 - 0.5
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for k, n in enumerate(lengths):
        mask[k, :n] = 1
    return rewards, mask


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_appending_pads_changes_no_aggregate(method):
    rewards, mask = _group([3, 5, 2])
    base = aggregate(rewards, mask, method, tau=0.7)
    padded_rewards = torch.cat([rewards, torch.full((3, 4), 123.0)], dim=1)  # garbage under the pads
    padded_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    assert torch.allclose(aggregate(padded_rewards, padded_mask, method, tau=0.7), base, atol=1e-6)


def test_hand_computed_values():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    mean_length = 2.0  # (3 + 1) / 2
    assert aggregate(rewards, mask, "sum").tolist() == [6.0, 4.0]
    assert torch.allclose(aggregate(rewards, mask, "avg"), torch.tensor([2.0, 4.0]) * mean_length)
    soft = torch.logsumexp(torch.tensor([1.0, 2.0, 3.0]), 0)
    assert torch.allclose(
        aggregate(rewards, mask, "softmax", tau=1.0), torch.stack([soft, torch.tensor(4.0)]) * 2
    )


def test_avg_equals_sum_for_equal_lengths_and_scales_with_uniform_length_scaling():
    rewards, mask = _group([4, 4, 4])
    assert torch.allclose(aggregate(rewards, mask, "avg"), aggregate(rewards, mask, "sum"))
    # Unequal lengths: repeating every sequence c times keeps each mean, multiplies L̄ by c.
    rewards, mask = _group([2, 5, 3], seed=1)
    base = aggregate(rewards, mask, "avg")
    rows = [rewards[k, : int(mask[k].sum())].repeat(3) for k in range(3)]
    tiled = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    tiled_mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r, dtype=torch.long) for r in rows], True)
    scaled = aggregate(tiled, tiled_mask, "avg")
    assert torch.allclose(scaled, 3 * base, atol=1e-5)
    assert scaled.argsort().tolist() == base.argsort().tolist()
    # The per-token mean part alone is invariant.
    assert torch.allclose(scaled / tiled_mask.sum(-1).float().mean(), base / mask.sum(-1).float().mean())


def test_avg_is_mean_times_mean_length_per_input_not_global():
    rewards = torch.ones(2, 2, 4)  # 2 inputs, K=2
    mask = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0]], [[1, 1, 1, 1], [1, 1, 1, 1]]])
    assert aggregate(rewards, mask, "avg").tolist() == [[2.0, 2.0], [4.0, 4.0]]


def test_soft_max_and_min_tend_to_max_and_min():
    rewards, mask = _group([3, 6, 1])
    mean_length = mask.sum(-1).float().mean()
    real = mask.bool()
    true_max = torch.where(real, rewards, -torch.inf).amax(-1)
    true_min = torch.where(real, rewards, torch.inf).amin(-1)
    for tau, tol in ((1e-2, 0.05), (1e-4, 1e-3)):
        assert torch.allclose(aggregate(rewards, mask, "softmax", tau) / mean_length, true_max, atol=tol)
        assert torch.allclose(aggregate(rewards, mask, "softmin", tau) / mean_length, true_min, atol=tol)
    # and for large tau soft max is above the max (log K term), soft min below the min
    assert (aggregate(rewards, mask, "softmax", 5.0) / mean_length >= true_max - 1e-6).all()
    assert (aggregate(rewards, mask, "softmin", 5.0) / mean_length <= true_min + 1e-6).all()


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_empty_sequence_scores_zero_with_finite_gradients(method):
    rewards = torch.rand(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    scores = aggregate(rewards, mask, method, tau=0.5)
    assert scores[1].item() == 0.0
    scores.sum().backward()
    assert torch.isfinite(rewards.grad).all()
    assert rewards.grad[mask == 0].abs().sum() == 0  # pads get no gradient


def test_bad_arguments_raise_value_error():
    rewards, mask = _group([2, 2])
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(rewards, mask, "median")
    with pytest.raises(ValueError, match="same shape"):
        aggregate(rewards, mask[:, :1], "sum")
    with pytest.raises(ValueError, match="tau"):
        aggregate(rewards, mask, "softmax", tau=0.0)
