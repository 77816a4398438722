"""The summarization policy update loop: one function, three methods, readable top to bottom.

- ``mle``:   supervised fine-tuning, uniform token weights (also the warm start).
- ``pgg``:   reward-weighted MLE on the references, w_t = r_t / sum r over the sequence, with r from the
             learned token-level guidance (precomputed per reference, no gradient through r). Optional
             extras from the paper: REINFORCE on sampled summaries with r as token weights (a sampled
             eos gets its sequence's mean r, as a reference's eos does: the guidance never saw eos),
             and an entropy bonus.
- ``seqpg``: MLE plus sequence-level REINFORCE on K samples per article, each rewarded with the
             sequence metric itself, leave-one-out baseline (RLOO): the "bandit" counterpart.

Sources are either cached encoder states (frozen encoder) or token ids (encoder trains).

Data parallel (optional): pass an ``accelerate.Accelerator`` and launch N processes (``accelerate launch`` /
``torchrun``). Every process draws the same global batch, trains on its 1/N slice and the gradients are
averaged, so the steps equal one process's steps on the whole batch (every loss is a mean over sequences).
Sampled terms draw different samples per process than one process would: same distribution, other draws.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from components.encoder_cache import EncodedSources
from components.policy_losses import (
    WEIGHTINGS,
    entropy_bonus,
    mle_loss,
    rloo_loss,
    token_reinforce_loss,
    weighted_mle_loss,
)
from components.reference_rewards import with_eos_as_mean
from components.rouge import mean_rouge_f
from components.seq2seq_policy import sample_k, sequence_log_probs, source_kwargs, special_ids

METHODS = ("mle", "pgg", "seqpg")
REINFORCE_MEANS = ("sequence", "token")
# (sampled texts, their references) -> one reward per sample
SequenceReward = Callable[[list[str], list[str]], torch.Tensor]
# (sample labels, mask, dataset row of each sample's source) -> token rewards [B, T]; the caller
# owns how its reward model reads a source (cached encoder states, its own token ids)
TokenGuidance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PolicyTrainConfig:
    """Every field is required: pgg's values live in params.yaml (``SummarizationPolicy.train_config``)."""

    method: str  # mle | pgg | seqpg
    steps: int
    lr: float
    warmup_steps: int  # linear warm-up from 0 to lr, then constant
    batch_size: int
    grad_accumulation: int
    grad_clip: float
    reinforce_coef: float  # pgg: REINFORCE on samples with guidance token rewards; seqpg: RLOO weight
    entropy_coef: float
    wmle_weighting: str  # pgg: w_t from r_t ("reward", the paper's) or exp(r_t) (softer)
    reinforce_mean: str  # pgg's REINFORCE: "sequence" (each sample counts once) | "token" (the authors')
    reinforce_baseline: bool  # pgg's REINFORCE: subtract the batch's token-mean reward (the authors' do not)
    k: int  # samples per article for sampled terms
    # articles of each batch whose k samples enter the sampled term (None: all of them). Sampling and
    # scoring k summaries costs several MLE steps, so a sub-batch keeps the sampled methods affordable.
    sampled_articles: int | None
    top_k: int
    top_p: float
    temperature: float
    max_target_tokens: int  # new tokens per sample
    seed: int

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.wmle_weighting not in WEIGHTINGS:
            raise ValueError(
                f"unknown wmle_weighting {self.wmle_weighting!r}; use one of {', '.join(WEIGHTINGS)}"
            )
        if self.reinforce_mean not in REINFORCE_MEANS:
            raise ValueError(
                f"unknown reinforce_mean {self.reinforce_mean!r}; use one of {', '.join(REINFORCE_MEANS)}"
            )
        if self.steps < 0 or self.batch_size < 1 or self.grad_accumulation < 1:
            raise ValueError("steps must be >= 0, batch_size and grad_accumulation >= 1")
        if self.sampled_articles is not None and not 1 <= self.sampled_articles <= self.batch_size:
            raise ValueError(
                f"sampled_articles must be between 1 and batch_size {self.batch_size}; got {self.sampled_articles}"
            )


def rouge_reward(texts: list[str], references: list[str]) -> torch.Tensor:
    """seqpg's sequence reward: mean of ROUGE-1/2/L F1 of each sample against its reference."""
    return torch.tensor(mean_rouge_f(texts, references))


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
    accelerator=None,
) -> list[dict]:
    """Run ``config.steps`` optimizer steps in place; return one stats dict per step.

    ``token_rewards[N, T]`` (pgg) align with ``labels[N, T]``; ``references`` and ``sequence_reward``
    are needed by seqpg; ``guidance`` by pgg's optional REINFORCE term.

    ``accelerator`` (an ``accelerate.Accelerator``): the model and optimizer go through its ``prepare``
    (device, data-parallel wrapper, bf16 autocast if it was built with ``mixed_precision="bf16"``), each
    global batch of ``batch_size`` rows is split across its processes, and the stats are averaged over
    them, so every process returns the same history. ``on_step`` runs on the main process only. At the
    end the model is the plain trained module again and the accelerator holds no references to it.
    """
    if config.method == "pgg" and token_rewards is None:
        raise ValueError("method pgg needs token_rewards for the references; fit the guidance first")
    if config.method == "seqpg" and (sequence_reward is None or references is None):
        raise ValueError("method seqpg needs references and a sequence_reward function")
    if config.method == "pgg" and config.reinforce_coef > 0 and guidance is None:
        raise ValueError("pgg with reinforce_coef > 0 needs the guidance model to reward samples")
    needs_samples = config.method == "seqpg" or (config.method == "pgg" and config.reinforce_coef > 0)
    processes = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    if config.batch_size % processes:
        raise ValueError(
            f"batch_size {config.batch_size} does not split over {processes} processes; make it a multiple"
        )

    # Dropout draws from the global RNG: seed it so a resumed run matches (each process its own stream).
    torch.manual_seed(config.seed + rank)
    generator = torch.Generator().manual_seed(config.seed)  # the same on every process: same batches
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / (config.warmup_steps + 1))
    )
    trained = model  # the module whose forward computes the loss: a data-parallel wrapper when distributed
    if accelerator is not None:
        trained, optimizer = accelerator.prepare(model, optimizer)
    trained.train()
    n = labels.shape[0]
    order = torch.randperm(n, generator=generator)
    cursor = 0
    history = []
    for step in range(1, config.steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(config.grad_accumulation):  # micro-batches; one optimizer step after them
            if cursor + config.batch_size > n:  # next epoch: reshuffle
                order, cursor = torch.randperm(n, generator=generator), 0
            rows = order[cursor : cursor + config.batch_size]
            cursor += config.batch_size
            rows = rows.chunk(processes)[rank]  # this process's equal share of the global batch
            last = micro == config.grad_accumulation - 1
            # Gradients are averaged across processes once per optimizer step, after the last micro-batch.
            sync = contextlib.nullcontext() if accelerator is None or last else accelerator.no_sync(trained)
            with sync:
                loss, stats = _batch_loss(
                    trained, model, tokenizer, sources, labels, mask, rows, config, generator,
                    token_rewards, references, sequence_reward, guidance, needs_samples, accelerator, rank,
                )  # fmt: skip
                if accelerator is None:
                    (loss / config.grad_accumulation).backward()
                else:
                    accelerator.backward(loss / config.grad_accumulation)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value / config.grad_accumulation
        stats = totals if accelerator is None else _mean_over_processes(totals, accelerator)
        clip = torch.nn.utils.clip_grad_norm_ if accelerator is None else accelerator.clip_grad_norm_
        stats["grad_norm"] = float(clip(params, config.grad_clip))
        optimizer.step()
        warmup.step()
        stats["seconds"] = time.perf_counter() - started
        history.append(stats)
        if on_step is not None and rank == 0:
            on_step(step, stats)
    if accelerator is not None:
        accelerator.unwrap_model(trained, keep_fp32_wrapper=False)  # drops the autocast forward patch
        accelerator.free_memory()
    model.eval()
    return history


def _mean_over_processes(stats: dict[str, float], accelerator) -> dict[str, float]:
    """Each process's stats are means over its equal share of the batch: their mean is the batch's."""
    keys = sorted(stats)
    values = accelerator.reduce(torch.tensor([stats[k] for k in keys], device=accelerator.device), "mean")
    return dict(zip(keys, values.tolist(), strict=True))


def _batch_loss(
    trained, model, tokenizer, sources, labels, mask, rows, config, generator,
    token_rewards, references, sequence_reward, guidance, needs_samples, accelerator, rank,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """The loss of one batch of articles ``rows`` under ``config.method``, and its parts for logging.

    ``trained`` computes the differentiable log-probs (the data-parallel wrapper when distributed);
    ``model`` is the plain module, used to sample."""
    batch_sources = source_kwargs(sources, rows)
    batch_labels, batch_mask = labels[rows], mask[rows]
    width = max(int(batch_mask.sum(dim=1).max()), 1)
    batch_labels, batch_mask = batch_labels[:, :width], batch_mask[:, :width]

    want_entropy = config.entropy_coef > 0
    scored = sequence_log_probs(
        trained, batch_labels, batch_mask, **batch_sources, return_entropy=want_entropy
    )
    stats: dict[str, float] = {}
    if config.method == "pgg":
        rewards = token_rewards[rows][:, :width].to(scored.logp.device)
        loss = weighted_mle_loss(scored.logp, scored.mask, rewards, config.wmle_weighting)
        stats["wmle_loss"] = loss.item()
    else:
        loss = mle_loss(scored.logp, scored.mask)
        stats["mle_loss"] = loss.item()
    if want_entropy:
        bonus = entropy_bonus(scored.entropy, scored.mask)
        loss = loss - config.entropy_coef * bonus
        stats["entropy"] = bonus.item()

    if needs_samples:
        if config.sampled_articles is not None:  # this process's share of the sampled sub-batch
            share = max(1, config.sampled_articles * len(rows) // config.batch_size)
            rows = rows[:share]
            batch_sources = source_kwargs(sources, rows)
        samples = sample_k(
            model,
            tokenizer,
            **batch_sources,
            k=config.k,
            top_k=config.top_k,
            top_p=config.top_p,
            temperature=config.temperature,
            max_new_tokens=config.max_target_tokens,
            # one draw per step on every process (keeps the batch order shared); each samples its own
            seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) + rank,
        )
        repeated = repeat_sources(batch_sources, config.k)
        sampled = sequence_log_probs(trained, samples.labels, samples.mask, **repeated)
        if config.method == "seqpg":
            refs = [references[int(i)] for i in rows for _ in range(config.k)]
            rewards = sequence_reward(samples.texts, refs).to(sampled.logp.device)
            pg = rloo_loss(sampled.logp, sampled.mask, rewards, config.k, per_token_mean=True)
            stats["sample_reward"] = rewards.mean().item()
        else:
            _, eos_id, _ = special_ids(model)
            with torch.no_grad():
                sample_rewards = guidance_without_eos(
                    guidance, samples.labels, samples.mask, rows.repeat_interleave(config.k), eos_id
                )
            if config.reinforce_baseline:
                baseline = _token_mean(sample_rewards, samples.mask, accelerator)  # over the global batch
                sample_rewards = (sample_rewards - baseline) * samples.mask
            pg = token_reinforce_loss(
                sampled.logp,
                sampled.mask,
                sample_rewards.to(sampled.logp.device),
                token_mean=config.reinforce_mean == "token",
            )
        loss = loss + config.reinforce_coef * pg
        stats["pg_loss"] = pg.item()
    stats["loss"] = loss.item()
    return loss, stats


def guidance_without_eos(
    guidance: TokenGuidance, labels: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, eos_id: int
) -> torch.Tensor:
    """Guidance rewards ``[B, T]`` of sampled sequences, read as the guidance was fit: without eos.

    The guidance is trained on re-tokenised text, which has no eos, so its r at an eos is an
    extrapolation. As for the references in the WMLE path, the guidance scores the tokens before eos
    and each eos gets its sequence's mean reward (0 for a sample that is eos alone). A sample cut at
    the length limit has no eos and is scored whole. Pads stay 0."""
    body = mask * (labels != eos_id).to(mask.dtype)
    return with_eos_as_mean(guidance(labels, body, rows), body, mask)


def _token_mean(values: torch.Tensor, mask: torch.Tensor, accelerator) -> torch.Tensor:
    """Mean of ``values`` over real tokens; across all processes' rows when distributed."""
    mask = mask.to(values.device, values.dtype)
    parts = torch.stack([(values * mask).sum(), mask.sum()])
    if accelerator is not None:
        parts = accelerator.reduce(parts.to(accelerator.device), "sum").to(values.device)
    return parts[0] / parts[1].clamp(min=1)
