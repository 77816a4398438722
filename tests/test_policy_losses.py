import pytest
import torch
import torch.nn.functional as F

from components.policy_losses import (
    entropy_bonus,
    mle_loss,
    reward_to_go,
    rloo_advantages,
    rloo_loss,
    token_reinforce_loss,
    token_weights,
    weighted_mle_loss,
)

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
LOGP = torch.tensor([[-1.0, -2.0, -3.0, -50.0], [-0.5, -1.5, -70.0, -80.0]])


def test_token_weights_are_normalised_per_sequence_and_zero_on_padding():
    rewards = torch.tensor([[1.0, 2.0, 1.0, 9.0], [3.0, 1.0, 7.0, 7.0]])
    weights = token_weights(rewards, MASK)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2))
    assert torch.equal(weights * (1 - MASK), torch.zeros_like(weights))
    assert torch.allclose(weights[0, :3], torch.tensor([0.25, 0.5, 0.25]))
    assert torch.allclose(weights[1, :2], torch.tensor([0.75, 0.25]))


def test_exp_reward_weights_are_softmax_of_rewards_and_bounded():
    rewards = torch.tensor([[0.0, 1.0, 1e-8, 9.0], [1.31, 1e-8, 7.0, 7.0]])
    weights = token_weights(rewards, MASK, "exp_reward")
    assert torch.allclose(weights[0, :3], torch.softmax(rewards[0, :3], dim=0))
    assert torch.equal(weights * (1 - MASK), torch.zeros_like(weights))
    assert weights[1, 0] / weights[1, 1] == pytest.approx(torch.tensor(1.31).exp().item(), rel=1e-5)
    # the paper's rule gives the near-zero reward a near-zero weight instead
    assert token_weights(rewards, MASK)[1, 1] < 1e-7
    constant = torch.full_like(LOGP, 0.3)
    assert weighted_mle_loss(LOGP, MASK, constant, "exp_reward").item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown weighting"):
        token_weights(rewards, MASK, "square")


def test_weighted_mle_matches_hand_computation():
    rewards = torch.tensor([[1.0, 2.0, 1.0, 9.0], [3.0, 1.0, 7.0, 7.0]])
    expected = ((0.25 * 1 + 0.5 * 2 + 0.25 * 3) + (0.75 * 0.5 + 0.25 * 1.5)) / 2
    assert weighted_mle_loss(LOGP, MASK, rewards).item() == pytest.approx(expected)


def test_weighted_mle_with_constant_rewards_is_per_sequence_mean_mle():
    # Sequences of unequal length: the per-sequence mean (2.0 and 1.0) averaged over sequences = 1.5,
    # not the token mean (1+2+3+0.5+1.5)/5 = 1.6.
    rewards = torch.full_like(LOGP, 0.7)
    assert weighted_mle_loss(LOGP, MASK, rewards).item() == pytest.approx(1.5)
    assert mle_loss(LOGP, MASK).item() == pytest.approx(1.5)


def test_mle_equals_token_mean_cross_entropy_for_equal_lengths():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    labels = torch.randint(0, 11, (3, 5))
    logp = -F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    expected = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1))
    assert mle_loss(logp, torch.ones(3, 5)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_mle_gives_no_gradient_to_rewards_and_weights_the_logp_gradient():
    logp = LOGP.clone().requires_grad_(True)
    rewards = torch.tensor([[1.0, 2.0, 1.0, 9.0], [3.0, 1.0, 7.0, 7.0]], requires_grad=True)
    weighted_mle_loss(logp, MASK, rewards).backward()
    assert rewards.grad is None
    # d loss / d logp_t = -w_t / B
    assert torch.allclose(logp.grad, -token_weights(rewards, MASK) / 2)


def test_weighted_mle_rejects_negative_rewards():
    with pytest.raises(ValueError, match="non-negative"):
        weighted_mle_loss(LOGP, MASK, -torch.ones_like(LOGP))


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="token_rewards"):
        weighted_mle_loss(LOGP, MASK, torch.ones(2, 3))


def test_rloo_advantages_sum_to_zero_per_group():
    rewards = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2, 0.2])
    adv = rloo_advantages(rewards, k=3).view(2, 3)
    assert torch.allclose(adv.sum(dim=1), torch.zeros(2), atol=1e-6)
    assert adv[0, 1].item() == pytest.approx(0.5 - (0.1 + 0.3) / 2)


def test_rloo_equal_rewards_give_zero_gradient():
    logp = torch.randn(6, 4, requires_grad=True)
    mask = torch.ones(6, 4)
    rloo_loss(logp, mask, torch.tensor([0.4, 0.4, 0.4, 0.1, 0.1, 0.1]), k=3).backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))


def test_rloo_raises_the_log_prob_of_the_best_sample():
    logp = torch.zeros(3, 2, requires_grad=True)
    rloo_loss(logp, torch.ones(3, 2), torch.tensor([1.0, 0.0, 0.0]), k=3).backward()
    assert (logp.grad[0] < 0).all() and (logp.grad[1:] > 0).all()  # descent raises sample 0


def test_rloo_needs_two_samples_per_group():
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.ones(4), k=1)


def test_token_reinforce_weights_each_token_by_its_reward():
    logp = torch.zeros(2, 4, requires_grad=True)
    rewards = torch.tensor([[1.0, -1.0, 2.0, 5.0], [0.5, 0.5, 3.0, 3.0]])
    token_reinforce_loss(logp, MASK, rewards).backward()
    expected = -(rewards * MASK) / MASK.sum(dim=1, keepdim=True) / 2
    assert torch.allclose(logp.grad, expected)


def test_reward_to_go_sums_future_real_rewards():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    assert torch.equal(reward_to_go(rewards, MASK[:1]), torch.tensor([[6.0, 5.0, 3.0, 0.0]]))


def test_entropy_bonus_is_per_sequence_mean():
    entropy = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 6.0, 9.0, 9.0]])
    assert entropy_bonus(entropy, MASK).item() == pytest.approx((2.0 + 5.0) / 2)
