"""Policy-gradient losses for the prompt policy (all inputs [n, L]; rewards are detached).

- Token-guided REINFORCE (the paper): each token's action is weighted by the learned token-level
  reward r(s_t, a_t): loss = mean_t[r_t * -log pi(a_t|s_t)] + alpha * mean_t[-H(pi(.|s_t))].
- Reward-to-go (option): token t is weighted by G_t = sum_{t' >= t} r_t' instead of r_t, so an early
  token is credited with the rewards of the tokens it leads to.
- Bandit REINFORCE (sequence-level baseline): every token of a prompt is weighted by that prompt's
  reward minus the batch-mean reward, with the same max-entropy term.
"""

from __future__ import annotations

import torch


def _check(log_probs: torch.Tensor, entropy: torch.Tensor, rewards: torch.Tensor) -> None:
    if log_probs.shape != entropy.shape or log_probs.dim() != 2:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)} and entropy {tuple(entropy.shape)} must both be [n, L]"
        )
    if rewards.shape != log_probs.shape:
        raise ValueError(
            f"token rewards {tuple(rewards.shape)} must match log_probs {tuple(log_probs.shape)}"
        )


def reward_to_go(token_rewards: torch.Tensor) -> torch.Tensor:
    """G_t = sum_{t' >= t} r_t' along the last dimension ([n, L] -> [n, L])."""
    return token_rewards.flip(-1).cumsum(-1).flip(-1)


def token_guided_reinforce_loss(
    log_probs: torch.Tensor,
    entropy: torch.Tensor,
    token_rewards: torch.Tensor,
    entropy_coef: float = 0.125,
) -> torch.Tensor:
    """mean_t[r_t * -log pi(a_t|s_t)] + entropy_coef * mean_t[-H_t]; r_t are the token rewards [n, L]."""
    _check(log_probs, entropy, token_rewards)
    policy_term = (token_rewards.detach() * -log_probs).mean()
    return policy_term - entropy_coef * entropy.mean()


def bandit_reinforce_loss(
    log_probs: torch.Tensor,
    entropy: torch.Tensor,
    sequence_rewards: torch.Tensor,
    entropy_coef: float = 0.125,
) -> torch.Tensor:
    """REINFORCE with the batch-mean baseline: (R_i - mean R) weights every token of prompt i."""
    if sequence_rewards.shape != log_probs.shape[:1]:
        raise ValueError(
            f"sequence rewards {tuple(sequence_rewards.shape)} must be [n] for log_probs {tuple(log_probs.shape)}"
        )
    advantages = (sequence_rewards - sequence_rewards.mean()).detach()
    return token_guided_reinforce_loss(
        log_probs, entropy, advantages[:, None].expand_as(log_probs), entropy_coef
    )
