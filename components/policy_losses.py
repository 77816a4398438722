"""Policy objectives on token log-probs ``token_logp[B, T]`` with a padding ``mask[B, T]`` (1 = real token).

Every loss is a scalar to minimise, averaged over sequences (each sequence counts once,
whatever its length). Rewards and advantages are treated as constants (detached).
"""

from __future__ import annotations

import torch


def _check(token_logp: torch.Tensor, mask: torch.Tensor, other: torch.Tensor | None = None, name: str = ""):
    if token_logp.dim() != 2 or mask.shape != token_logp.shape:
        raise ValueError(
            f"token_logp and mask must both be [B, T]; got {tuple(token_logp.shape)} and {tuple(mask.shape)}"
        )
    if other is not None and other.shape != token_logp.shape:
        raise ValueError(
            f"{name} must be [B, T] like token_logp {tuple(token_logp.shape)}; got {tuple(other.shape)}"
        )


def _per_sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's real tokens -> [B]."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def mle_loss(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Uniform token weights: per-sequence mean of -log pi(y_t), averaged over sequences.

    Equal to the usual token-mean cross-entropy when all sequences have the same length.
    """
    _check(token_logp, mask)
    mask = mask.to(token_logp.dtype)
    return -_per_sequence_mean(token_logp, mask).mean()


WEIGHTINGS = ("reward", "exp_reward")


def token_weights(token_rewards: torch.Tensor, mask: torch.Tensor, weighting: str = "reward") -> torch.Tensor:
    """w_t = f(r_t) / sum_t' f(r_t') over each sequence's real tokens (0 on padding), no grad.

    ``reward``: f(r) = r, the paper's rule. A confident guidance (r near 0 on some tokens) then
    all but stops learning those reference tokens. ``exp_reward``: f(r) = exp(r) (the
    ``exp_in_wmle`` switch of the authors' code): with r in (0, 1.31) no weight is more than
    e^1.31 = 3.7 times another, so every reference token keeps being learned.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}")
    rewards = token_rewards.detach()
    if bool((rewards * mask < 0).any()):
        raise ValueError(
            "weighted MLE needs non-negative token rewards; squash the reward model output (sigmoid/exp) first"
        )
    if weighting == "exp_reward":
        rewards = rewards.exp()
    rewards = rewards * mask
    return rewards / rewards.sum(dim=1, keepdim=True).clamp(min=1e-12)


def weighted_mle_loss(
    token_logp: torch.Tensor, mask: torch.Tensor, token_rewards: torch.Tensor, weighting: str = "reward"
) -> torch.Tensor:
    """Reward-weighted MLE (Yang et al. 2023, summarization): -sum_t w_t log pi(y_t | x, y_<t), batch mean.

    With constant rewards w_t = 1 / length, so this equals ``mle_loss`` (for either weighting).
    """
    _check(token_logp, mask, token_rewards, "token_rewards")
    mask = mask.to(token_logp.dtype)
    weights = token_weights(token_rewards, mask, weighting)
    return -(weights * token_logp).sum(dim=1).mean()


def reward_to_go(token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_{t' >= t} r_t' over real tokens (undiscounted)."""
    rewards = token_rewards * mask
    return rewards.flip(dims=[1]).cumsum(dim=1).flip(dims=[1]) * mask


def token_reinforce_loss(
    token_logp: torch.Tensor,
    mask: torch.Tensor,
    token_rewards: torch.Tensor,
    use_reward_to_go: bool = False,
    token_mean: bool = False,
) -> torch.Tensor:
    """REINFORCE on sampled sequences with the token reward r_t (or its reward-to-go) weighting log pi(y_t).

    Loss = -mean over sequences of (1/length) sum_t A_t log pi(y_t), A_t = r_t detached. With
    ``token_mean`` every real token counts once instead (the authors' code): -sum A_t log pi / sum lengths.
    Centre the rewards beforehand if a baseline is wanted.
    """
    _check(token_logp, mask, token_rewards, "token_rewards")
    mask = mask.to(token_logp.dtype)
    advantages = token_rewards.detach().to(token_logp.dtype)
    if use_reward_to_go:
        advantages = reward_to_go(advantages, mask)
    if token_mean:
        return -(advantages * token_logp * mask).sum() / mask.sum().clamp(min=1)
    return -_per_sequence_mean(advantages * token_logp, mask).mean()


def entropy_bonus(token_entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean token entropy, averaged over sequences. Subtract ``coef * bonus`` from a loss."""
    _check(token_entropy, mask)
    return _per_sequence_mean(token_entropy, mask.to(token_entropy.dtype)).mean()


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out advantages for ``rewards[B*K]`` in groups of ``k`` consecutive samples per input.

    adv_i = r_i - mean of the other k-1 rewards of its group; each group's advantages sum to 0.
    """
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per input for a leave-one-out baseline; got {k}")
    flat = rewards.detach().reshape(-1)
    if flat.numel() % k:
        raise ValueError(f"got {flat.numel()} rewards, not a multiple of k={k}; pass k samples per input")
    groups = flat.view(-1, k).double()
    groups = groups - groups[:, :1]  # shift-invariant; makes equal rewards give exactly zero advantage
    baseline = (groups.sum(dim=1, keepdim=True) - groups) / (k - 1)
    return (groups - baseline).reshape(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def rloo_loss(
    token_logp: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    k: int,
    per_token_mean: bool = False,
) -> torch.Tensor:
    """Sequence-level REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024).

    ``rewards[B*K]`` is the sequence metric (e.g. ROUGE) of each sample, rows grouped as ``sample_k``
    returns them. Loss = -mean(adv * sum_t log pi(y_t)); with ``per_token_mean`` the sum becomes a
    per-sequence mean, which stops long samples dominating the gradient.
    """
    _check(token_logp, mask)
    if rewards.numel() != token_logp.shape[0]:
        raise ValueError(
            f"need one reward per sampled sequence: {token_logp.shape[0]} rows, {rewards.numel()} rewards"
        )
    mask = mask.to(token_logp.dtype)
    advantages = rloo_advantages(rewards, k).to(token_logp.device, token_logp.dtype)
    sequence_logp = _per_sequence_mean(token_logp, mask) if per_token_mean else (token_logp * mask).sum(dim=1)
    return -(advantages * sequence_logp).mean()
