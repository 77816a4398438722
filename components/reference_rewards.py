"""The learned guidance read off the training references and the policy's samples: pgg's token weights.

Summarization pgg trains on the references with w_t = r_t / sum r (``policy_losses.token_weights``),
where r_t comes from a fitted ``TokenRewardModel``. The guidance was fit on candidate texts
re-tokenised without special tokens, so it never saw an end-of-sequence token; the policy's
targets end with one. The rule, the same for references (here) and samples
(``policy_trainer.guidance_without_eos``): the eos token gets its sequence's mean reward, and only
the tokens before it go through the reward model.

Sources: a seq2seq reward model shares the policy's input (cached encoder states of a frozen
encoder, or token ids); a single-stack one (``causal_lm``, ``encoder``) reads the article's own
token ids in front of the summary, as the guidance fit tokenised them (``reward_sources``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from components.encoder_cache import EncodedSources
from components.policy_losses import token_weights
from components.reward_model import TokenRewardModel
from components.seq2seq_policy import tokenize_sources


def eos_and_body(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of each sequence's eos token (its last real token), and the mask without it."""
    eos_position = mask.sum(dim=1).long() - 1
    body_mask = mask.clone()
    body_mask[torch.arange(len(mask)), eos_position] = 0
    return eos_position, body_mask


def with_eos_as_mean(rewards: torch.Tensor, body_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``rewards`` of the body tokens (``body_mask`` 1) kept, every other real token (``mask`` 1: the
    eos) given the mean body reward of its sequence, padding 0. A sequence with no body gets 0."""
    body_mask = body_mask.to(rewards.device, torch.float32)
    mask = mask.to(rewards.device, torch.float32)
    rewards = rewards.float() * body_mask
    mean = rewards.sum(dim=1, keepdim=True) / body_mask.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.where(body_mask.bool(), rewards, mean.expand_as(rewards)) * mask


def reward_sources(
    reward_model: TokenRewardModel, tokenizer, texts: list[str], policy_sources, max_tokens: int
) -> EncodedSources | dict:
    """The articles as ``reward_model`` reads them: the policy's own source input for a seq2seq one,
    else the articles' token ids (``tokenizer`` is the reward backbone's)."""
    if reward_model.kind == "seq2seq":
        return policy_sources
    return dict(tokenize_sources(tokenizer, texts, max_tokens))


def reward_source_kwargs(sources: EncodedSources | dict, rows: torch.Tensor) -> dict:
    """``TokenRewardModel`` keyword arguments for the source rows ``rows``."""
    if isinstance(sources, EncodedSources):
        part = sources.select(rows)
        return {"encoder_hidden_states": part.hidden.float(), "source_attention_mask": part.attention_mask}
    mask = sources["attention_mask"][rows]
    return {"source_ids": sources["input_ids"][rows], "source_attention_mask": mask}


def _on(device, kwargs: dict) -> dict:
    return {key: value.to(device) for key, value in kwargs.items()}


@torch.no_grad()
def reference_states(reward_model: TokenRewardModel, labels, mask, sources, chunk: int = 64) -> torch.Tensor:
    """Reward-backbone states ``[N, T, H]`` (fp16, on the CPU) of every reference token but eos.

    A frozen backbone gives the same states at every refit (only the head changes), so a caller may
    compute them once and pass them to ``reference_token_rewards``."""
    _, body_mask = eos_and_body(mask)
    device = next(reward_model.parameters()).device
    parts = []
    for start in range(0, len(labels), chunk):
        rows = torch.arange(start, min(start + chunk, len(labels)))
        hidden = reward_model.token_hidden_states(
            labels[rows].to(device),
            body_mask[rows].long().to(device),
            **_on(device, reward_source_kwargs(sources, rows)),
        )
        parts.append(hidden.to("cpu", torch.float16))
    return torch.cat(parts)


@torch.no_grad()
def reference_token_rewards(
    reward_model: TokenRewardModel, labels, mask, sources, chunk: int = 64, states=None
) -> torch.Tensor:
    """Guidance rewards r_t ``[N, T]`` for every reference token (eos: its sequence's mean; 0 on
    padding). ``states`` (from ``reference_states``) skip the backbone."""
    _, body_mask = eos_and_body(mask)
    out = torch.zeros_like(mask)
    device = next(reward_model.parameters()).device
    for start in range(0, len(labels), chunk):
        rows = torch.arange(start, min(start + chunk, len(labels)))
        row_mask = body_mask[rows].long().to(device)
        if states is not None:
            rewards = reward_model.rewards_from_hidden(states[rows].to(device), row_mask)
        else:
            kwargs = _on(device, reward_source_kwargs(sources, rows))
            rewards = reward_model(labels[rows].to(device), row_mask, **kwargs)
        out[rows] = with_eos_as_mean(rewards.float().cpu(), body_mask[rows], mask[rows])
    return out


def sample_guidance(
    reward_model: TokenRewardModel, sources: EncodedSources | dict, device
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The ``TokenGuidance`` of ``policy_trainer.train_policy``: token rewards of sampled sequences
    (labels, mask, dataset row of each sample's source). The trainer hides a sampled eos from it and
    gives the eos its sequence's mean (``policy_trainer.guidance_without_eos``), as for references."""

    def rewards(sample_labels: torch.Tensor, sample_mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        kwargs = _on(device, reward_source_kwargs(sources, rows))
        return reward_model(sample_labels.to(device), sample_mask.long().to(device), **kwargs)

    return rewards


def leading_weight(token_rewards: torch.Tensor, mask: torch.Tensor, n: int = 3) -> float:
    """Mean WMLE weight w_t = r_t / sum r of the first ``n`` reference tokens (1/length each under
    MLE): a one-number summary of where the guidance moves the weight, for the run's metrics."""
    return float(token_weights(token_rewards, mask)[:, :n].mean())
