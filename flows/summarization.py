"""Summarization recipes: warm start, the alternating guidance/policy loop and its baselines, evaluation.

Layout under runs/summarization/ (DVC outputs):
  encoder_cache/{split}.pt          frozen-encoder states, shared by sampling, training and guidance
  warmstart/                        MLE warm start every method starts from
  {method}/iter-{i}/policy/         policy after iteration i
  {method}/iter-{i}/guidance/       token-level reward model (pgg, refit iterations)
  {method}/iter-{i}/state.json      iteration metrics + input fingerprint; written last
  test_predictions/{method}.jsonl   per-article test predictions and ROUGE (evaluate)
  pgg/reference_states.pt           frozen reward-backbone states of the training references,
                                    computed at the first refit and reused by the later ones
An iteration whose state.json matches the current inputs is complete and is skipped on a rerun,
so a killed run resumes from its last complete iteration.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import torch
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from components import data
from components.encoder_cache import EncodedSources, encode_sources
from components.guidance_trainer import GuidanceTrainer, token_rewards
from components.lead_baseline import lead_summaries
from components.models import ModelSpec, load_model, load_tokenizer
from components.policy_trainer import PolicyTrainConfig, source_kwargs, train_policy
from components.preferences import RankedList, load_ranked_lists, make_preference, rank_candidates
from components.reward_model import TokenRewardModel
from components.rouge import compute_rouge, rouge_per_example
from components.seq2seq_policy import (
    encode_targets,
    freeze_encoder,
    generate_greedy,
    sample_k,
    tokenize_sources,
)
from flows import reporting
from flows.checkpoints import (
    is_complete,
    load_guidance,
    load_policy,
    read_state,
    save_guidance,
    save_policy,
)
from flows.common import (
    PhaseTimer,
    apply_runtime,
    atomic_write_json,
    content_cache,
    content_hash,
    pick_device,
    seed_everything,
    unlearned_guidance,
)
from flows.config import Config
from flows.distributed import (
    Hardware,
    hardware,
    make_accelerator,
    run_step,
    task_runner,
    write_once,
)
from flows.prepare import summarization_dir
from flows.tracking import check_reachable, pipeline_run, tracking_uri

TASK = "summarization"
REWARD_MODEL_KEYS = ("reward_backbone", "reward_backbone_kind", "reward_decoder_layers")
PGG_POLICY_KEYS = ("wmle_weighting", "reinforce_coef", "entropy_coef")
PREFERENCE_NAMES = {"rouge": "rouge", "embedding": "embedding", "meteor": "meteor"}


def runs_dir(config: Config) -> Path:
    return config.runtime.runs_dir / TASK


def metrics_dir(config: Config) -> Path:
    return config.runtime.runs_dir.parent / "metrics" / TASK


def split_file(config: Config, split: str) -> Path:
    return summarization_dir(config) / f"{split}.jsonl"


def cache_file(config: Config, split: str) -> Path | None:
    if not config.models.summarization.freeze_encoder:
        return None
    return runs_dir(config) / "encoder_cache" / f"{split}.pt"


def _load_sources(config: Config, split: str, tokenizer) -> EncodedSources | dict:
    """Cached encoder states when the encoder is frozen, else token ids for a live encoder."""
    cached = cache_file(config, split)
    if cached is not None:
        return EncodedSources.load(cached)
    examples = data.read_summaries(split_file(config, split))
    return dict(
        tokenize_sources(
            tokenizer,
            [e.source for e in examples],
            config.sampling.summarization.max_source_tokens,
            config.models.summarization.source_prefix,
        )
    )


def length_batches(lengths: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Positions ``0..len(lengths)-1`` in batches of similar length (longest first), so a batch pads
    to its own longest source instead of the split's; generation pays for padding at every token."""
    order = torch.argsort(torch.as_tensor(lengths), descending=True, stable=True)
    return list(order.split(batch_size))


def _progress(label: str, total: int, every: int = 25):
    """on_step callback: a log line every ``every`` steps, so long phases show they are alive."""
    logger = get_run_logger()

    def report(step: int, stats: dict) -> None:
        if step % every == 0 or step == total:
            logger.info(
                f"{label}: step {step}/{total}, loss {stats['loss']:.3f}, {stats['seconds']:.2f} s/step"
            )

    return report


def _train_config(config: Config, method: str, steps: int, lr: float, seed: int) -> PolicyTrainConfig:
    policy, sampling = config.policy.summarization, config.sampling.summarization
    return PolicyTrainConfig(
        method=method,
        steps=steps,
        lr=lr,
        warmup_steps=policy.warmup_steps,
        batch_size=policy.batch_size,
        grad_accumulation=policy.grad_accumulation,
        grad_clip=policy.grad_clip,
        reinforce_coef=policy.seqpg_coef if method == "seqpg" else policy.reinforce_coef,
        entropy_coef=policy.entropy_coef if method == "pgg" else 0.0,
        wmle_weighting=policy.wmle_weighting,
        sampled_articles=policy.sampled_articles,
        k=sampling.k,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        temperature=sampling.temperature,
        max_new_tokens=sampling.max_target_tokens,
        seed=seed,
    )


# --- tasks ------------------------------------------------------------------------------------


@task(cache_policy=content_cache("encoder_cache.py", "models.py"), persist_result=True, retries=1)
def encode_split(split_path: Path, out: str, models, sampling) -> Path:
    """Run the frozen encoder once over a split and store its states. (Outputs are passed as str:
    the cache key hashes Path arguments by content, and an output's content is not an input.)"""
    tokenizer, model = load_model(ModelSpec(models.policy, "seq2seq", models.decoder_layers))
    examples = data.read_summaries(split_path)
    encoded = encode_sources(
        model.get_encoder(),
        tokenizer,
        [e.source for e in examples],
        max_length=sampling.max_source_tokens,
        prefix=models.source_prefix,
    )
    encoded.save(out)
    return Path(out)


@task(
    cache_policy=content_cache(
        "policy_trainer.py", "policy_losses.py", "seq2seq_policy.py", "models.py", "data.py"
    ),
    persist_result=True,
)
def warm_start(
    train_path: Path,
    encoder_cache: Path | None,
    out: str,
    models,
    policy,
    sampling,
    seed: int,
    hw: Hardware = Hardware(),
) -> Path:
    """MLE fine-tuning from the pretrained weights: the shared starting point of every method."""
    kwargs = dict(
        train_path=train_path, encoder_cache=encoder_cache, out=out, models=models, policy=policy,
        sampling=sampling, seed=seed, hw=hw,
    )  # fmt: skip
    return run_step(_warm_start, kwargs, hw.processes)


def _warm_start(train_path, encoder_cache, out, models, policy, sampling, seed, hw) -> Path:
    seed_everything(seed)
    accelerator = make_accelerator(hw)
    tokenizer, model = load_model(ModelSpec(models.policy, "seq2seq", models.decoder_layers))
    if models.freeze_encoder:
        freeze_encoder(model)
    examples = data.read_summaries(train_path)
    sources = (
        EncodedSources.load(encoder_cache)
        if encoder_cache
        else dict(
            tokenize_sources(
                tokenizer, [e.source for e in examples], sampling.max_source_tokens, models.source_prefix
            )
        )
    )
    labels, mask = encode_targets(tokenizer, [e.target for e in examples], sampling.max_target_tokens, model)
    train_cfg = PolicyTrainConfig(
        method="mle",
        steps=policy.warmstart_steps,
        lr=policy.warmstart_lr,
        warmup_steps=policy.warmup_steps,
        batch_size=policy.batch_size,
        grad_accumulation=policy.grad_accumulation,
        grad_clip=policy.grad_clip,
        seed=seed,
    )
    history = train_policy(
        model, tokenizer, sources, labels, mask, train_cfg, on_step=_step_log("warm start", train_cfg.steps),
        accelerator=accelerator,
    )  # fmt: skip
    tail = history[-20:] or [{"loss": float("nan"), "seconds": 0.0}]
    state = {
        "steps": len(history),
        "final_loss": sum(h["loss"] for h in tail) / len(tail),
        "seconds": sum(h["seconds"] for h in history),
    }
    write_once(accelerator, lambda: save_policy(model, tokenizer, Path(out), state))
    return Path(out)


def _step_log(label: str, total: int):
    """Progress lines inside a Prefect task run; quiet outside one (a data-parallel step's processes)."""
    return _progress(label, total) if TaskRunContext.get() is not None else None


@task(
    cache_policy=content_cache("seq2seq_policy.py", "preferences.py", "rouge.py", "data.py"),
    persist_result=True,
    task_run_name="sample-and-rank-iter{iteration}",
)
def sample_and_rank(
    policy_dir: Path,
    train_path: Path,
    encoder_cache: Path | None,
    sampling,
    guidance,
    frozen: bool,
    seed: int,
    iteration: int,
    device: str = "cpu",
) -> list[RankedList]:
    """K samples per article from the current policy, scored by the sequence-level preference."""
    if guidance.preference == "rankings":
        return load_ranked_lists(guidance.rankings_file)
    tokenizer, model = load_policy(policy_dir, frozen, device=pick_device(device))
    examples = data.read_summaries(train_path)
    generator = torch.Generator().manual_seed(seed * 1000 + iteration)
    chosen = torch.randperm(len(examples), generator=generator)[: sampling.articles_per_iteration]
    sources = EncodedSources.load(encoder_cache) if encoder_cache else None
    lengths = (
        sources.attention_mask[chosen].sum(dim=1)
        if sources is not None
        else torch.tensor([len(examples[int(i)].source) for i in chosen])
    )
    by_chunk: dict[int, list[list[str]]] = {}
    for start, positions in enumerate(length_batches(lengths, 32)):
        rows = chosen[positions]
        if sources is not None:
            part = sources.select(rows)
            kwargs = {"attention_mask": part.attention_mask, "encoder_hidden": part.hidden}
        else:
            kwargs = dict(
                tokenize_sources(
                    tokenizer, [examples[int(i)].source for i in rows], sampling.max_source_tokens
                )
            )
        out = sample_k(
            model,
            tokenizer,
            **kwargs,
            k=sampling.k,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            temperature=sampling.temperature,
            max_new_tokens=sampling.max_target_tokens,
            seed=seed * 1000 + iteration * 100 + start,
        )
        groups = [out.texts[j : j + sampling.k] for j in range(0, len(out.texts), sampling.k)]
        by_chunk.update(zip(positions.tolist(), groups, strict=True))
    candidates = [by_chunk[position] for position in range(len(chosen))]
    picked = [examples[int(i)] for i in chosen]
    preference = make_preference(PREFERENCE_NAMES[guidance.preference])
    return rank_candidates(preference, [e.source for e in picked], candidates, [e.target for e in picked])


def _reward_model(models, guidance, previous: Path | None):
    if previous is not None and guidance.refit == "warm":
        model = load_guidance(previous, freeze_backbone=guidance.freeze_backbone)
        tokenizer = load_tokenizer(models.reward_backbone)
    else:
        kind = models.reward_backbone_kind
        layers = models.reward_decoder_layers if kind == "seq2seq" else None
        tokenizer, model = TokenRewardModel.from_spec(
            ModelSpec(models.reward_backbone, kind, layers),
            head_hidden=guidance.head_hidden,
            squash=guidance.squash,
            freeze_backbone=guidance.freeze_backbone,
        )
    if models.freeze_encoder and model.kind == "seq2seq":  # source side stays pretrained; decoder learns
        model.backbone.get_encoder().requires_grad_(False)
    return tokenizer, model


@task(task_run_name="fit-guidance-iter{iteration}")
def fit_guidance(
    lists: list[RankedList],
    previous: Path | None,
    out: Path,
    models,
    guidance,
    sampling,
    seed: int,
    iteration: int,
    hw: Hardware = Hardware(),
) -> dict:
    """Learn token rewards whose aggregate orders each list of K like the preference does."""
    kwargs = dict(
        lists=lists, previous=previous, out=out, models=models, guidance=guidance, sampling=sampling,
        seed=seed, iteration=iteration, hw=hw,
    )  # fmt: skip
    return run_step(_fit_guidance, kwargs, hw.processes)


def _fit_guidance(lists, previous, out, models, guidance, sampling, seed, iteration, hw) -> dict:
    tokenizer, model = _reward_model(models, guidance, previous)
    accelerator = make_accelerator(hw)
    trainer = GuidanceTrainer(
        model,
        tokenizer,
        guidance.trainer_config(
            seed=seed * 1000 + iteration,
            max_length=sampling.max_target_tokens,
            max_source_length=sampling.max_source_tokens,
        ),
        accelerator=accelerator,
    )
    report = trainer.fit(lists).as_dict()
    write_once(accelerator, lambda: save_guidance(model.cpu(), out, {"iteration": iteration, **report}))
    return report


@task(cache_policy=NO_CACHE, task_run_name="token-rewards-iter{iteration}")
def sample_token_rewards(
    guidance_dir: Path, lists: list[RankedList], models, sampling, iteration: int, n_lists: int = 3
) -> list[reporting.TokenRewards]:
    """Token rewards of every candidate of the first ``n_lists`` sampled lists, best candidate first."""
    model = load_guidance(guidance_dir, freeze_backbone=True)
    tokenizer = load_tokenizer(models.reward_backbone)
    shown = []
    for number, ranked in enumerate(lists[:n_lists], start=1):
        order = sorted(range(len(ranked.candidates)), key=lambda j: -ranked.scores[j])
        for rank, j in enumerate(order, start=1):
            pairs = token_rewards(
                model, tokenizer, ranked.candidates[j], ranked.source, sampling.max_source_tokens
            )
            caption = f"article {number} · rank {rank}/{len(order)} · score {ranked.scores[j]:.3f}"
            shown.append(reporting.TokenRewards(caption, tuple(pairs)))
    return shown


def _sample_rows(lists: list[RankedList], n_lists: int = 20) -> list[dict]:
    return [
        {"article": number, "source": (ranked.source or "")[:300], "candidate": text, "score": score}
        for number, ranked in enumerate(lists[:n_lists], start=1)
        for text, score in zip(ranked.candidates, ranked.scores, strict=True)
    ]


def _eos_and_body(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of each reference's eos token, and the mask without it (the guidance never saw eos)."""
    eos_position = mask.sum(dim=1).long() - 1
    body_mask = mask.clone()
    body_mask[torch.arange(len(mask)), eos_position] = 0
    return eos_position, body_mask


@torch.no_grad()
def reference_states(reward_model, labels, mask, sources, chunk: int = 64) -> torch.Tensor:
    """Reward-backbone states ``[N, T, H]`` (fp16) of every reference token but eos."""
    _, body_mask = _eos_and_body(mask)
    device = next(reward_model.parameters()).device
    parts = []
    for start in range(0, len(labels), chunk):
        rows = torch.arange(start, min(start + chunk, len(labels)))
        kwargs = {key: value.to(device) for key, value in _reward_source_kwargs(sources, rows).items()}
        hidden = reward_model.token_hidden_states(
            labels[rows].to(device), body_mask[rows].long().to(device), **kwargs
        )
        parts.append(hidden.to("cpu", torch.float16))
    return torch.cat(parts)


@torch.no_grad()
def reference_token_rewards(
    reward_model, labels, mask, sources, chunk: int = 64, states=None
) -> torch.Tensor:
    """Guidance rewards r_t for every reference token. The eos token, which the guidance never sees
    in training, gets its sequence's mean reward. ``states`` (from ``reference_states``) skip the
    backbone: a frozen one gives the same states at every refit, only the head changes."""
    eos_position, body_mask = _eos_and_body(mask)
    out = torch.zeros_like(mask)
    device = next(reward_model.parameters()).device
    for start in range(0, len(labels), chunk):
        rows = torch.arange(start, min(start + chunk, len(labels)))
        row_mask = body_mask[rows].long().to(device)
        if states is not None:
            rewards = reward_model.rewards_from_hidden(states[rows].to(device), row_mask)
        else:
            kwargs = {key: value.to(device) for key, value in _reward_source_kwargs(sources, rows).items()}
            rewards = reward_model(labels[rows].to(device), row_mask, **kwargs)
        rewards = rewards.float().cpu()
        mean = rewards.sum(dim=1) / body_mask[rows].sum(dim=1).clamp(min=1)
        rewards[torch.arange(len(rows)), eos_position[rows]] = mean
        out[rows] = rewards * mask[rows]
    return out


def _cached_reference_states(config: Config, reward_model, labels, mask, reward_sources, save: bool):
    """The frozen reward backbone's reference states, computed at the first refit of a run and read
    back at the next ones (the backbone pass over every reference is most of a refit's cost)."""
    models, sampling = config.models.summarization, config.sampling.summarization
    key = content_hash(
        [getattr(models, name) for name in REWARD_MODEL_KEYS], models.source_prefix, sampling.max_source_tokens,
        sampling.max_target_tokens, split_file(config, "train"), labels.shape,
    )  # fmt: skip
    path = runs_dir(config) / "pgg" / "reference_states.pt"
    if path.exists():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("key") == key:
                return cached["states"]
        except Exception:  # a damaged cache is recomputed, never trusted
            pass
    states = reference_states(reward_model, labels, mask, reward_sources)
    if save:  # one writer when data parallel; the other processes computed the same states
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"key": key, "states": states}, tmp)
        tmp.replace(path)
    return states


def _reward_sources(config: Config, reward_model, examples, policy_sources) -> EncodedSources | dict:
    """The articles as the reward model reads them. A seq2seq one shares the policy's (cached) encoder
    input; a single-stack one reads the article's own tokens, as the guidance fit tokenized them."""
    if reward_model.kind == "seq2seq":
        return policy_sources
    tokenizer = load_tokenizer(config.models.summarization.reward_backbone)
    max_tokens = config.sampling.summarization.max_source_tokens
    return dict(tokenize_sources(tokenizer, [e.source for e in examples], max_tokens))


def _reward_source_kwargs(sources, rows) -> dict:
    if isinstance(sources, EncodedSources):
        part = sources.select(rows)
        return {"encoder_hidden_states": part.hidden.float(), "source_attention_mask": part.attention_mask}
    mask = sources["attention_mask"][rows]
    return {"source_ids": sources["input_ids"][rows], "source_attention_mask": mask}


@task(task_run_name="train-{method}-iter{iteration}")
def train_iteration(
    method: str,
    iteration: int,
    start_policy: Path,
    guidance_dir: Path | None,
    out: Path,
    config: Config,
    steps: int,
) -> dict:
    """``steps`` policy updates of ``method`` from ``start_policy``; saves the new policy to ``out``."""
    kwargs = dict(
        method=method, iteration=iteration, start_policy=start_policy, guidance_dir=guidance_dir, out=out,
        config=config, steps=steps,
    )  # fmt: skip
    return run_step(_train_iteration, kwargs, config.runtime.processes)


def _train_iteration(method, iteration, start_policy, guidance_dir, out, config: Config, steps) -> dict:
    accelerator = make_accelerator(hardware(config.runtime))
    frozen = config.models.summarization.freeze_encoder
    tokenizer, model = load_policy(start_policy, frozen)
    examples = data.read_summaries(split_file(config, "train"))
    sources = _load_sources(config, "train", tokenizer)
    labels, mask = encode_targets(
        tokenizer, [e.target for e in examples], config.sampling.summarization.max_target_tokens, model
    )
    seed = config.runtime.seed * 1000 + iteration
    token_rewards, guidance_fn, first_weights = None, None, float("nan")
    if method == "pgg":
        reward_model = load_guidance(guidance_dir, freeze_backbone=True, device=accelerator.device)
        reward_sources = _reward_sources(config, reward_model, examples, sources)
        states = None
        if config.guidance.summarization.freeze_backbone:
            states = _cached_reference_states(
                config, reward_model, labels, mask, reward_sources, accelerator.is_main_process
            )
        token_rewards = reference_token_rewards(reward_model, labels, mask, reward_sources, states=states)
        weights = token_rewards / token_rewards.sum(dim=1, keepdim=True).clamp(min=1e-12)
        first_weights = float(weights[:, :3].mean())

        def guidance_fn(sample_labels, sample_mask, rows):
            device = accelerator.device
            kwargs = _reward_source_kwargs(reward_sources, rows)
            return reward_model(
                sample_labels.to(device),
                sample_mask.long().to(device),
                **{key: value.to(device) for key, value in kwargs.items()},
            )

    def rouge_reward(texts: list[str], refs: list[str]) -> torch.Tensor:
        scores = rouge_per_example(texts, refs)
        return torch.tensor([(s["rouge1"] + s["rouge2"] + s["rougeL"]) / 3 for s in scores])

    lr = config.policy.summarization.lr
    history = train_policy(
        model,
        tokenizer,
        sources,
        labels,
        mask,
        _train_config(config, method, steps, lr, seed),
        token_rewards=token_rewards,
        references=[e.target for e in examples],
        sequence_reward=rouge_reward,
        guidance=guidance_fn,
        on_step=_step_log(f"{method} iteration {iteration}", steps),
        accelerator=accelerator,
    )
    stats = {
        "policy_loss": sum(h["loss"] for h in history) / max(len(history), 1),
        "first_token_weight": first_weights,
        "seconds_per_step": sum(h["seconds"] for h in history) / max(len(history), 1),
    }
    write_once(
        accelerator,
        lambda: save_policy(model, tokenizer, out, {"method": method, "iteration": iteration, **stats}),
    )
    return stats


@task(task_run_name="evaluate-{split}")
def evaluate_policy(policy_dir: Path, split: str, config: Config, n_examples: int = 8) -> dict:
    """Greedy decoding on a split; ROUGE-1/2/L/Lsum F1 in percent plus a few example outputs."""
    frozen = config.models.summarization.freeze_encoder
    tokenizer, model = load_policy(policy_dir, frozen, device=pick_device(config.runtime.device))
    examples = data.read_summaries(split_file(config, split))
    limit = config.eval.summarization.max_examples
    examples = examples[:limit] if limit else examples
    sources = _load_sources(config, split, tokenizer)
    lengths = sources.attention_mask if isinstance(sources, EncodedSources) else sources["attention_mask"]
    by_row: dict[int, str] = {}
    for rows in length_batches(lengths[: len(examples)].sum(dim=1), config.eval.summarization.batch_size):
        if isinstance(sources, EncodedSources):
            part = sources.select(rows)
            kwargs = {"attention_mask": part.attention_mask, "encoder_hidden": part.hidden}
        else:
            kwargs = source_kwargs(sources, rows)  # token ids, trimmed to the batch's longest source
        texts = generate_greedy(
            model, tokenizer, **kwargs, max_new_tokens=config.sampling.summarization.max_target_tokens
        ).texts
        by_row.update(zip(rows.tolist(), texts, strict=True))
    predictions = [by_row[row] for row in range(len(examples))]
    scores = {k: 100 * v for k, v in compute_rouge(predictions, [e.target for e in examples]).items()}
    samples = [
        {"id": e.id, "reference": e.target, "prediction": p}
        for e, p in zip(examples[:n_examples], predictions, strict=False)
    ]
    return {"rouge": scores, "n": len(examples), "samples": samples, "predictions": predictions}


# --- flows ------------------------------------------------------------------------------------


@flow(name="summarization-warmstart")
def warmstart_flow(config: Config) -> Path:
    """Encoder cache (if the encoder is frozen) and the shared MLE warm start."""
    apply_runtime(config.runtime)
    models, sampling = config.models.summarization, config.sampling.summarization
    caches = {}
    for split in data.SPLITS:
        target = cache_file(config, split)
        if target is not None:
            caches[split] = encode_split.with_options(refresh_cache=not target.exists())(
                split_file(config, split), str(target), models, sampling
            )
    out = runs_dir(config) / "warmstart"
    return warm_start.with_options(refresh_cache=not is_complete(out))(
        split_file(config, "train"),
        caches.get("train"),
        str(out),
        models,
        config.policy.summarization,
        sampling,
        config.runtime.seed,
        hardware(config.runtime),
    )


def _fingerprint(config: Config, method: str, warm: Path) -> str:
    """What an iteration's result depends on; a complete iteration with another fingerprint is stale."""
    models, policy = config.models.summarization, config.policy.summarization
    if method != "pgg":  # the same keys as the baseline's DVC stage: pgg-only settings leave it cached
        models = models.model_dump(exclude=set(REWARD_MODEL_KEYS))
        sampled = ["seqpg_coef", "sampled_articles"] if method == "mle" else []
        policy = policy.model_dump(exclude={*PGG_POLICY_KEYS, *sampled})
    loop = config.loop.summarization
    if method != "pgg":  # the guidance schedule
        loop = loop.model_dump(exclude={"refit_until"})
    sections = [models, policy, loop]
    if method in ("pgg", "seqpg"):
        sections.append(config.sampling.summarization)
    if method == "pgg":
        sections.append(config.guidance.summarization)
    weights = sorted(Path(warm).glob("*.safetensors"))  # not state.json: it holds wall-clock seconds
    return content_hash(method, config.runtime.seed, weights, *sections)


@flow(name="summarization-align")
def align_flow(config: Config, method: str) -> list[dict]:
    """The loop for one method. pgg: sample -> rank -> fit guidance -> weighted MLE -> evaluate."""
    check_reachable(tracking_uri(config))  # before any training, not after the warm start
    apply_runtime(config.runtime)
    # The warm start on disk is the align stage's input (DVC made it in the stage before); build it
    # only when it is missing, so a code edit elsewhere never silently redoes it under this stage.
    warm = runs_dir(config) / "warmstart"
    if not is_complete(warm):
        warm = warmstart_flow(config)
    loop = config.loop.summarization
    method_dir = runs_dir(config) / method
    method_dir.mkdir(parents=True, exist_ok=True)
    run_id_file = method_dir / "mlflow_run_id"
    previous_run = run_id_file.read_text().strip() if run_id_file.exists() else None
    fingerprint = _fingerprint(config, method, warm)
    frozen = config.models.summarization.freeze_encoder
    rows: list[dict] = []
    policy_dir, guidance_dir = warm, None

    with pipeline_run(config, TASK, method, extra_tags={"resumed_from": previous_run or ""}) as run:
        run_id_file.write_text(run.info.run_id)
        for iteration in range(1, loop.iterations + 1):
            fingerprint = content_hash(fingerprint, iteration)
            iter_dir = method_dir / f"iter-{iteration}"
            if is_complete(iter_dir) and read_state(iter_dir).get("fingerprint") == fingerprint:
                row = read_state(iter_dir)["metrics"]  # resume: this iteration is already done
                policy_dir = iter_dir / "policy"
                guidance_dir = iter_dir / "guidance" if (iter_dir / "guidance").exists() else guidance_dir
                rows.append(row)
                mlflow.log_metrics(row, step=iteration)
                continue
            shutil.rmtree(iter_dir, ignore_errors=True)
            timer = PhaseTimer()
            row: dict[str, float] = {}
            first_step = (iteration - 1) * loop.refit_every
            if method == "pgg" and (guidance_dir is None or first_step < loop.refit_until):
                with timer.phase("sample"):
                    lists = sample_and_rank.with_options(refresh_cache=False)(
                        policy_dir,
                        split_file(config, "train"),
                        cache_file(config, "train"),
                        config.sampling.summarization,
                        config.guidance.summarization,
                        frozen,
                        config.runtime.seed,
                        iteration,
                        config.runtime.device,
                    )
                    row["preference/mean_score"] = sum(sum(x.scores) / len(x.scores) for x in lists) / len(
                        lists
                    )
                with timer.phase("guidance"):
                    report = fit_guidance(
                        lists,
                        guidance_dir,
                        iter_dir / "guidance",
                        config.models.summarization,
                        config.guidance.summarization,
                        config.sampling.summarization,
                        config.runtime.seed,
                        iteration,
                        hardware(config.runtime),
                    )
                guidance_dir = iter_dir / "guidance"
                with timer.phase("report"):  # the picture of the method: what the new guidance rewards
                    shown = sample_token_rewards(
                        guidance_dir,
                        lists,
                        config.models.summarization,
                        config.sampling.summarization,
                        iteration,
                    )
                    reporting.log_token_heatmap(
                        shown, f"iter-{iteration}", f"{TASK} · token rewards after guidance refit {iteration}"
                    )
                    reporting.log_sample_table(_sample_rows(lists), f"iter-{iteration}")
                row.update(
                    {
                        "guidance/train_loss": report["train_loss"],
                        "guidance/val_loss": report["val_loss"],
                        "guidance/pairwise_accuracy": report["val_pairwise_accuracy"],
                        "guidance/kendall_tau": report["val_kendall_tau"],
                        "guidance/chance_val_loss": report["chance_val_loss"],
                        "guidance/tied_lists_dropped": report["n_tied_dropped"],
                    }
                )
                if not report["learned"]:
                    get_run_logger().warning(unlearned_guidance(report, iteration, "summarization"))
            steps = min(loop.refit_every, loop.policy_steps - first_step)
            with timer.phase("train"):
                stats = train_iteration(
                    method, iteration, policy_dir, guidance_dir, iter_dir / "policy", config, steps
                )
            policy_dir = iter_dir / "policy"
            with timer.phase("evaluate"):
                evaluation = evaluate_policy(policy_dir, "validation", config)
            row["policy/loss"] = stats["policy_loss"]
            if method == "pgg":
                row["policy/first_token_weight"] = stats["first_token_weight"]
            row.update({f"val/{k}": v for k, v in evaluation["rouge"].items()})
            row.update({f"seconds/{k}": v for k, v in timer.seconds.items()})
            row = {k: float(v) for k, v in row.items() if v == v}  # drop NaN
            mlflow.log_metrics(row, step=iteration)
            atomic_write_json(iter_dir / "state.json", {"fingerprint": fingerprint, "metrics": row})
            rows.append(row)
        curve = [{"iteration": i + 1, **r} for i, r in enumerate(rows)]
        atomic_write_json(method_dir / "curve.json", curve)
        mlflow.log_dict({"iterations": curve}, "curve.json")
        reporting.log_learning_curves({method: curve}, f"{TASK} · {method}")
        if method == "pgg" and config.tracking.register_models:
            sampling = config.sampling.summarization
            reporting.log_policy_model(
                policy_dir,
                Path(__file__).with_name("policy_model.py"),
                registered_name=f"{config.tracking.experiment_prefix}-{TASK}",
                model_config={
                    "max_source_tokens": sampling.max_source_tokens,
                    "max_new_tokens": sampling.max_target_tokens,
                    "source_prefix": config.models.summarization.source_prefix,
                },
            )
    return rows


def final_policy(config: Config, method: str) -> Path:
    if method == "warmstart":
        return runs_dir(config) / "warmstart"
    return runs_dir(config) / method / f"iter-{config.loop.summarization.iterations}" / "policy"


@flow(name="summarization-evaluate-policies")
def evaluate_policies(config: Config, policies: dict[str, Path], split: str) -> dict[str, dict]:
    """``evaluate_policy`` of every named policy, submitted together to this flow's task runner (run it
    ``.with_options(task_runner=distributed.task_runner(config.runtime))``): in parallel with Dask."""
    futures = {
        name: evaluate_policy.with_options(task_run_name=f"evaluate-{name}-{split}").submit(
            path, split, config
        )
        for name, path in policies.items()
    }
    return {name: future.result() for name, future in futures.items()}


def test_predictions_file(config: Config, method: str) -> Path:
    """Per-article test predictions of a method; beside, not inside, the align stage's DVC output."""
    return runs_dir(config) / "test_predictions" / f"{method}.jsonl"


def write_test_predictions(path: Path, examples, predictions: list[str]) -> None:
    """One JSON line per test article: id, reference, prediction and its ROUGE F1 x 100, for paired
    per-article comparisons between methods (bench.summarization's bootstrap intervals)."""
    per_article = rouge_per_example(predictions, [e.target for e in examples])
    rows = [
        {"id": e.id, "reference": e.target, "prediction": p, **{k: 100 * v for k, v in r.items()}}
        for e, p, r in zip(examples, predictions, per_article, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(path)


@flow(name="summarization-evaluate")
def evaluate_flow(config: Config, method: str, evaluation: dict | None = None) -> dict:
    """Test-set ROUGE of a method's final policy (or of the lead-k baseline) into metrics/summarization/.
    ``evaluation``: the policy's ``evaluate_policy`` result on the test split, if already computed."""
    apply_runtime(config.runtime)
    examples = data.read_summaries(split_file(config, "test"))
    limit = config.eval.summarization.max_examples
    examples = examples[:limit] if limit else examples
    if method == "lead":
        k = config.eval.summarization.lead_k
        predictions = lead_summaries([e.source for e in examples], k)
        scores = {key: 100 * v for key, v in compute_rouge(predictions, [e.target for e in examples]).items()}
        result = {"rouge": scores, "n": len(examples), "samples": [], "predictions": predictions}
    else:
        result = evaluation or evaluate_policy(final_policy(config, method), "test", config)
    write_test_predictions(test_predictions_file(config, method), examples, result["predictions"])
    metrics = {f"test_{key}": round(value, 3) for key, value in result["rouge"].items()}
    metrics["n_test"] = result["n"]
    atomic_write_json(metrics_dir(config) / f"{method}.json", metrics)
    run_id_file = runs_dir(config) / method / "mlflow_run_id"
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    with pipeline_run(config, TASK, method, run_id=run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if k != "n_test"})
        if result["samples"]:
            mlflow.log_table(
                {key: [s[key] for s in result["samples"]] for key in result["samples"][0]},
                "test_samples.json",
            )
    create_markdown_artifact(
        key=f"summarization-{method}-test".replace("_", "-"),
        markdown=f"### {method}: test ROUGE\n\n" + "\n".join(f"- {k}: {v}" for k, v in metrics.items()),
    )
    return metrics


@flow(name="summarization")
def summarization_pipeline(config: Config) -> dict:
    """Everything, in order: warm start, each method's loop, test evaluation (deployments run this)."""
    check_reachable(tracking_uri(config))
    warmstart_flow(config)
    results = {}
    for method in config.loop.methods:
        align_flow(config, method)
    policies = {method: final_policy(config, method) for method in ("warmstart", *config.loop.methods)}
    runner = task_runner(config.runtime)  # the test decodes are independent: parallel with Dask
    evaluations = evaluate_policies.with_options(task_runner=runner)(config, policies, "test")
    for method in ("lead", "warmstart", *config.loop.methods):
        results[method] = evaluate_flow(config, method, evaluations.get(method))
    table = [{"method": method, **metrics} for method, metrics in results.items()]
    create_markdown_artifact(
        key="summarization-results",
        markdown="### summarization: test ROUGE F1 (%)\n\n" + reporting.markdown_table(table),
        description="test metrics of every method of this pipeline run",
    )
    return results
