"""The summarization policy update loop: one function, three methods, readable top to bottom.

- ``mle``:   supervised fine-tuning, uniform token weights (also the warm start).
- ``pgg``:   reward-weighted MLE on the references, w_t = r_t / sum r over the sequence, with r from the
             learned token-level guidance (precomputed per reference, no gradient through r). Optional
             extras from the paper: REINFORCE on sampled summaries with r as token weights, and an
             entropy bonus.
- ``seqpg``: MLE plus sequence-level REINFORCE on K samples per article, each rewarded with the
             sequence metric itself, leave-one-out baseline (RLOO): the "bandit" counterpart.

Sources are either cached encoder states (frozen encoder) or token ids (encoder trains).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from components.encoder_cache import EncodedSources
from components.policy_losses import entropy_bonus, mle_loss, rloo_loss, token_reinforce_loss, weighted_mle_loss
from components.seq2seq_policy import sample_k, sequence_log_probs

METHODS = ("mle", "pgg", "seqpg")
# (sampled texts, their references) -> one reward per sample
SequenceReward = Callable[[list[str], list[str]], torch.Tensor]
# (labels, mask, source kwargs) -> token rewards [B, T]
TokenGuidance = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


@dataclass(frozen=True)
class PolicyTrainConfig:
    method: str = "mle"
    steps: int = 100
    lr: float = 5e-5
    warmup_steps: int = 0  # linear warm-up from 0 to lr, then constant
    batch_size: int = 32
    grad_accumulation: int = 1
    grad_clip: float = 1.0
    reinforce_coef: float = 0.0  # pgg: REINFORCE on samples with guidance token rewards; seqpg: RLOO weight
    entropy_coef: float = 0.0
    k: int = 3  # samples per article for sampled terms
    top_k: int = 50
    top_p: float = 0.95
    temperature: float = 1.0
    max_new_tokens: int = 24
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.steps < 0 or self.batch_size < 1 or self.grad_accumulation < 1:
            raise ValueError("steps must be >= 0, batch_size and grad_accumulation >= 1")


def source_kwargs(sources: EncodedSources | dict, indices: torch.Tensor) -> dict:
    """Keyword arguments for seq2seq_policy functions for rows ``indices`` of the sources."""
    if isinstance(sources, EncodedSources):
        chosen = sources.select(indices)
        return {"attention_mask": chosen.attention_mask, "encoder_hidden": chosen.hidden}
    mask = sources["attention_mask"][indices]
    length = max(int(mask.sum(dim=1).max()), 1)
    return {"attention_mask": mask[:, :length], "input_ids": sources["input_ids"][indices][:, :length]}


def repeat_sources(kwargs: dict, k: int) -> dict:
    """Each source row k times in a row, matching sample_k's output order."""
    return {key: value.repeat_interleave(k, dim=0) for key, value in kwargs.items()}


def train_policy(
    model: torch.nn.Module,
    tokenizer,
    sources: EncodedSources | dict,
    labels: torch.Tensor,
    mask: torch.Tensor,
    config: PolicyTrainConfig,
    token_rewards: torch.Tensor | None = None,
    references: list[str] | None = None,
    sequence_reward: SequenceReward | None = None,
    guidance: TokenGuidance | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Run ``config.steps`` optimizer steps in place; return one stats dict per step.

    ``token_rewards[N, T]`` (pgg) align with ``labels[N, T]``; ``references`` and ``sequence_reward``
    are needed by seqpg; ``guidance`` by pgg's optional REINFORCE term.
    """
    if config.method == "pgg" and token_rewards is None:
        raise ValueError("method pgg needs token_rewards for the references; fit the guidance first")
    if config.method == "seqpg" and (sequence_reward is None or references is None):
        raise ValueError("method seqpg needs references and a sequence_reward function")
    if config.method == "pgg" and config.reinforce_coef > 0 and guidance is None:
        raise ValueError("pgg with reinforce_coef > 0 needs the guidance model to reward samples")
    needs_samples = config.method == "seqpg" or (config.method == "pgg" and config.reinforce_coef > 0)

    torch.manual_seed(config.seed)  # dropout draws from the global RNG: seed it so a resumed run matches
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / (config.warmup_steps + 1)))
    model.train()
    n = labels.shape[0]
    order = torch.randperm(n, generator=generator)
    cursor = 0
    history = []
    for step in range(1, config.steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for _ in range(config.grad_accumulation):  # micro-batches; one optimizer step after them
            if cursor + config.batch_size > n:  # next epoch: reshuffle
                order, cursor = torch.randperm(n, generator=generator), 0
            rows = order[cursor : cursor + config.batch_size]
            cursor += config.batch_size
            loss, stats = _batch_loss(
                model, tokenizer, sources, labels, mask, rows, config, generator,
                token_rewards, references, sequence_reward, guidance, needs_samples,
            )  # fmt: skip
            (loss / config.grad_accumulation).backward()
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value / config.grad_accumulation
        stats = totals
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
        optimizer.step()
        warmup.step()
        stats["seconds"] = time.perf_counter() - started
        history.append(stats)
        if on_step is not None:
            on_step(step, stats)
    model.eval()
    return history


def _batch_loss(
    model, tokenizer, sources, labels, mask, rows, config, generator,
    token_rewards, references, sequence_reward, guidance, needs_samples,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """The loss of one batch of articles ``rows`` under ``config.method``, and its parts for logging."""
    batch_sources = source_kwargs(sources, rows)
    batch_labels, batch_mask = labels[rows], mask[rows]
    width = max(int(batch_mask.sum(dim=1).max()), 1)
    batch_labels, batch_mask = batch_labels[:, :width], batch_mask[:, :width]

    want_entropy = config.entropy_coef > 0
    scored = sequence_log_probs(
        model, batch_labels, batch_mask, **batch_sources, return_entropy=want_entropy
    )
    stats: dict[str, float] = {}
    if config.method == "pgg":
        rewards = token_rewards[rows][:, :width].to(scored.logp.device)
        loss = weighted_mle_loss(scored.logp, scored.mask, rewards)
        stats["wmle_loss"] = loss.item()
    else:
        loss = mle_loss(scored.logp, scored.mask)
        stats["mle_loss"] = loss.item()
    if want_entropy:
        bonus = entropy_bonus(scored.entropy, scored.mask)
        loss = loss - config.entropy_coef * bonus
        stats["entropy"] = bonus.item()

    if needs_samples:
        samples = sample_k(
            model,
            tokenizer,
            **batch_sources,
            k=config.k,
            top_k=config.top_k,
            top_p=config.top_p,
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens,
            seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)),
        )
        repeated = repeat_sources(batch_sources, config.k)
        sampled = sequence_log_probs(model, samples.labels, samples.mask, **repeated)
        if config.method == "seqpg":
            refs = [references[int(i)] for i in rows for _ in range(config.k)]
            rewards = sequence_reward(samples.texts, refs).to(sampled.logp.device)
            pg = rloo_loss(sampled.logp, sampled.mask, rewards, config.k, per_token_mean=True)
            stats["sample_reward"] = rewards.mean().item()
        else:
            with torch.no_grad():
                sample_rewards = guidance(samples.labels, samples.mask, repeated)
            centred = (sample_rewards - sample_rewards[samples.mask.bool()].mean()) * samples.mask
            pg = token_reinforce_loss(sampled.logp, sampled.mask, centred.to(sampled.logp.device))
        loss = loss + config.reinforce_coef * pg
        stats["pg_loss"] = pg.item()
    stats["loss"] = loss.item()
    return loss, stats
