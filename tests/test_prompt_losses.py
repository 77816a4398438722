import pytest
import torch

from components.prompt_losses import bandit_reinforce_loss, token_guided_reinforce_loss


def _inputs():
    gen = torch.Generator().manual_seed(0)
    log_probs = (-torch.rand(4, 5, generator=gen)).requires_grad_(True)
    entropy = torch.rand(4, 5, generator=gen).requires_grad_(True)
    return log_probs, entropy


def test_token_guided_loss_with_constant_rewards_is_weighted_nll():
    log_probs, entropy = _inputs()
    loss = token_guided_reinforce_loss(log_probs, entropy, torch.full((4, 5), 2.5), entropy_coef=0.0)
    nll = torch.nn.functional.nll_loss(log_probs.reshape(-1, 1), torch.zeros(20, dtype=torch.long))
    assert torch.allclose(loss, 2.5 * nll)
    with_entropy = token_guided_reinforce_loss(log_probs, entropy, torch.full((4, 5), 2.5))
    assert torch.allclose(with_entropy, 2.5 * nll - 0.125 * entropy.mean())


def test_token_rewards_are_detached_and_weight_each_token():
    log_probs, entropy = _inputs()
    rewards = torch.zeros(4, 5, requires_grad=True)
    weights = torch.zeros(4, 5)
    weights[1, 2] = 3.0
    token_guided_reinforce_loss(log_probs, entropy, rewards + weights, entropy_coef=0.0).backward()
    assert rewards.grad is None
    expected = torch.zeros(4, 5)
    expected[1, 2] = -3.0 / 20
    assert torch.allclose(log_probs.grad, expected)


def test_bandit_loss_uses_batch_mean_baseline():
    log_probs, entropy = _inputs()
    rewards = torch.tensor([1.0, 3.0, 5.0, 7.0])
    loss = bandit_reinforce_loss(log_probs, entropy, rewards, entropy_coef=0.1)
    advantages = torch.tensor([-3.0, -1.0, 1.0, 3.0])[:, None]
    assert torch.allclose(loss, (advantages * -log_probs).mean() - 0.1 * entropy.mean())
    constant = bandit_reinforce_loss(log_probs, entropy, torch.full((4,), 9.0), entropy_coef=0.0)
    assert constant.item() == pytest.approx(0.0)


def test_shape_errors():
    log_probs, entropy = _inputs()
    with pytest.raises(ValueError, match="must match"):
        token_guided_reinforce_loss(log_probs, entropy, torch.zeros(4))
    with pytest.raises(ValueError, match="must be \\[n\\]"):
        bandit_reinforce_loss(log_probs, entropy, torch.zeros(4, 5))
