"""Summarization recipes: warm start, the alternating guidance/policy loop and its baselines, evaluation.

The loop is ``align_flow`` (Algorithm 1 of the paper, one method at a time). Tasks wire components
together; the math is in components/ (policy_trainer, guidance_trainer, reference_rewards, ...).

Layout under runs/summarization/ (DVC outputs):
  encoder_cache/{split}.pt          frozen-encoder states, shared by sampling, training and guidance
  warmstart/                        MLE warm start every method starts from
  warmstart/made_by.json, encoder_cache/{split}.pt.made_by.json
                                    what made them (flows/provenance.py): reused only under the same
                                    code, params and data, else made again
  {method}/iter-{i}/policy/         policy after iteration i (frozen encoder: the rest of the weights
                                    plus a hash-checked reference to the pretrained encoder)
  {method}/iter-{i}/guidance/       token-level reward model (pgg, refit iterations)
  {method}/iter-{i}/state.json      iteration metrics + input fingerprint; written last
  test_predictions/{method}.jsonl   per-article test predictions and ROUGE (evaluate)
  pgg/reference_states.pt           frozen reward-backbone states of the training references,
                                    computed at the first refit and reused by the later ones
An iteration whose state.json matches the current inputs and code is complete and is skipped on a
rerun, so a killed run resumes from its last complete iteration (flows/resume.py); a finished loop run
again is redone. A finished loop keeps the weights of its last policy and guidance only (and drops
reference_states.pt): the earlier ones were only resume points.
"""

from __future__ import annotations

import json
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
from components.policy_checkpoint import REFERENCE_FILE
from components.policy_trainer import rouge_reward, train_policy
from components.preferences import RankedList, load_ranked_lists, make_preference, rank_candidates
from components.reference_rewards import (
    leading_weight,
    reference_states,
    reference_token_rewards,
    reward_sources,
    sample_guidance,
)
from components.reward_model import TokenRewardModel
from components.rouge import compute_rouge, rouge_per_example
from components.seq2seq_policy import (
    encode_targets,
    freeze_encoder,
    greedy_texts,
    sample_lists,
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
    standalone_policy,
    superseded_payload,
)
from flows.common import (
    CONTENT_CACHE,
    PhaseTimer,
    apply_runtime,
    atomic_write_json,
    content_hash,
    guidance_metrics,
    pick_device,
    seed_everything,
    unlearned_guidance,
)
from flows.config import Config
from flows.distributed import Hardware, data_parallel, hardware, make_accelerator, task_runner, write_once
from flows.prepare import check_prepared, summarization_dir
from flows.progress import loss_callback
from flows.provenance import made_under, needs_remaking, stage_fingerprint, write_record
from flows.resume import ResumableLoop, run_id_of
from flows.stage_code import code_hash
from flows.tracking import check_reachable, log_step_curves, pipeline_run, tracking_uri

TASK = "summarization"
REWARD_MODEL_KEYS = ("reward_backbone", "reward_backbone_kind", "reward_decoder_layers")
PGG_POLICY_KEYS = ("wmle_weighting", "reinforce_coef", "entropy_coef")
REFERENCE_STATES_FILE = "reference_states.pt"
WARMSTART_STAGE = "summarize_warmstart"  # the DVC stage whose outputs are the encoder cache and warm start


def policy_spec(models) -> ModelSpec:
    """The pretrained model every policy starts from (a frozen-encoder checkpoint refers to its encoder)."""
    return ModelSpec(models.policy, "seq2seq", models.decoder_layers)


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


def _sources(examples, encoder_cache: Path | None, tokenizer, models, sampling) -> EncodedSources | dict:
    """A split's sources as the policy reads them: cached encoder states when the encoder is frozen,
    else token ids for the live encoder."""
    if encoder_cache is not None:
        return EncodedSources.load(encoder_cache)
    texts = [e.source for e in examples]
    return dict(tokenize_sources(tokenizer, texts, sampling.max_source_tokens, models.source_prefix))


def _progress(label: str, total: int):
    """on_step callback: a bar with rate and ETA (a log line per tenth off a terminal), with the loss."""
    report = loss_callback(label, total, get_run_logger())
    return lambda step, stats: report(step, stats["loss"])


def _step_log(label: str, total: int):
    """Progress lines inside a Prefect task run; quiet outside one (a data-parallel step's processes)."""
    return _progress(label, total) if TaskRunContext.get() is not None else None


# --- tasks ------------------------------------------------------------------------------------


@task(cache_policy=CONTENT_CACHE, persist_result=True, retries=1)
def encode_split(split_path: Path, out: str, models, sampling) -> Path:
    """Run the frozen encoder once over a split and store its states. (Outputs are passed as str:
    the cache key hashes Path arguments by content, and an output's content is not an input.)"""
    tokenizer, model = load_model(policy_spec(models))
    examples = data.read_summaries(split_path)
    encoded = encode_sources(
        model.get_encoder(),
        tokenizer,
        [e.source for e in examples],
        max_length=sampling.max_source_tokens,
        prefix=models.source_prefix,
    )
    encoded.save(out, storage="int8" if models.encoder_cache_storage == "int8" else "native")
    return Path(out)


@task(cache_policy=CONTENT_CACHE, persist_result=True)
@data_parallel
def warm_start(
    train_path: Path, encoder_cache: Path | None, out: str, models, policy, sampling, seed: int, hw: Hardware
) -> Path:
    """MLE fine-tuning from the pretrained weights: the shared starting point of every method."""
    seed_everything(seed)
    accelerator = make_accelerator(hw)
    tokenizer, model = load_model(policy_spec(models))
    if models.freeze_encoder:
        freeze_encoder(model)
    examples = data.read_summaries(train_path)
    sources = _sources(examples, encoder_cache, tokenizer, models, sampling)
    labels, mask = encode_targets(tokenizer, [e.target for e in examples], sampling.max_target_tokens, model)
    train_cfg = policy.train_config("mle", policy.warmstart_steps, policy.warmstart_lr, seed, sampling)
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
    write_once(accelerator, lambda: save_policy(model, tokenizer, Path(out), state, policy_spec(models)))
    return Path(out)


@task(
    cache_policy=CONTENT_CACHE,
    persist_result=True,
    task_run_name="sample-and-rank-iter{iteration}",
)
def sample_and_rank(
    policy_dir: Path,
    train_path: Path,
    encoder_cache: Path | None,
    models,
    sampling,
    guidance,
    seed: int,
    iteration: int,
    device: str = "cpu",
) -> list[RankedList]:
    """K samples per article from the current policy, scored by the sequence-level preference."""
    if guidance.preference == "rankings":
        return load_ranked_lists(guidance.rankings_file)
    tokenizer, model = load_policy(policy_dir, models.freeze_encoder, device=pick_device(device))
    examples = data.read_summaries(train_path)
    generator = torch.Generator().manual_seed(seed * 1000 + iteration)
    chosen = torch.randperm(len(examples), generator=generator)[: sampling.articles_per_iteration]
    candidates = sample_lists(
        model, tokenizer, _sources(examples, encoder_cache, tokenizer, models, sampling), chosen,
        k=sampling.k, seed=seed * 1000 + iteration * 100, top_k=sampling.top_k, top_p=sampling.top_p,
        temperature=sampling.temperature, max_new_tokens=sampling.max_target_tokens,
    )  # fmt: skip
    picked = [examples[int(i)] for i in chosen]
    preference = make_preference(guidance.preference)
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
@data_parallel
def fit_guidance(
    lists: list[RankedList],
    previous: Path | None,
    out: Path,
    models,
    guidance,
    sampling,
    seed: int,
    iteration: int,
    hw: Hardware,
) -> dict:
    """Learn token rewards whose aggregate orders each list of K like the preference does."""
    seed_everything(seed * 1000 + iteration)  # the new head's init, whatever ran before in this process
    tokenizer, model = _reward_model(models, guidance, previous)
    accelerator = make_accelerator(hw)
    settings = guidance.trainer_config(
        seed=seed * 1000 + iteration,
        max_length=sampling.max_target_tokens,
        max_source_length=sampling.max_source_tokens,
    )
    on_step = _step_log(f"guidance iteration {iteration} (epochs)", settings.epochs)
    on_epoch = None if on_step is None else lambda row: on_step(row["epoch"], {"loss": row["train_loss"]})
    fitted = GuidanceTrainer(model, tokenizer, settings, accelerator=accelerator).fit(
        lists, on_epoch=on_epoch
    )
    report = {**fitted.as_dict(), "epoch_losses": [h["train_loss"] for h in fitted.history]}
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


def _cached_reference_states(config: Config, reward_model, labels, mask, readings, save: bool):
    """The frozen reward backbone's reference states, computed at the first refit of a run and read
    back at the next ones (the backbone pass over every reference is most of a refit's cost)."""
    models, sampling = config.models.summarization, config.sampling.summarization
    key = content_hash(
        [getattr(models, name) for name in REWARD_MODEL_KEYS], models.source_prefix, sampling.max_source_tokens,
        sampling.max_target_tokens, split_file(config, "train"), labels.shape,
    )  # fmt: skip
    path = runs_dir(config) / "pgg" / REFERENCE_STATES_FILE
    if path.exists():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("key") == key:
                return cached["states"]
        except Exception:  # a damaged cache is recomputed, never trusted
            pass
    states = reference_states(reward_model, labels, mask, readings)
    if save:  # one writer when data parallel; the other processes computed the same states
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"key": key, "states": states}, tmp)
        tmp.replace(path)
    return states


@task(task_run_name="train-{method}-iter{iteration}")
@data_parallel
def train_iteration(
    method: str,
    iteration: int,
    start_policy: Path,
    guidance_dir: Path | None,
    out: Path,
    config: Config,
    steps: int,
    hw: Hardware,
) -> dict:
    """``steps`` policy updates of ``method`` from ``start_policy``; saves the new policy to ``out``."""
    accelerator = make_accelerator(hw)
    models, sampling = config.models.summarization, config.sampling.summarization
    tokenizer, model = load_policy(start_policy, models.freeze_encoder)
    examples = data.read_summaries(split_file(config, "train"))
    sources = _sources(examples, cache_file(config, "train"), tokenizer, models, sampling)
    labels, mask = encode_targets(tokenizer, [e.target for e in examples], sampling.max_target_tokens, model)
    rewards, guidance, first_weight = None, None, float("nan")
    if method == "pgg":  # the guidance read off every reference (the WMLE weights) and, if asked, samples
        reward_model = load_guidance(guidance_dir, freeze_backbone=True, device=accelerator.device)
        readings = reward_sources(
            reward_model, load_tokenizer(models.reward_backbone), [e.source for e in examples], sources,
            sampling.max_source_tokens,
        )  # fmt: skip
        states = None
        if config.guidance.summarization.freeze_backbone:
            states = _cached_reference_states(
                config, reward_model, labels, mask, readings, accelerator.is_main_process
            )
        rewards = reference_token_rewards(reward_model, labels, mask, readings, states=states)
        first_weight = leading_weight(rewards, mask)
        guidance = sample_guidance(reward_model, readings, accelerator.device)
    policy = config.policy.summarization
    history = train_policy(
        model, tokenizer, sources, labels, mask,
        policy.train_config(method, steps, policy.lr, config.runtime.seed * 1000 + iteration, sampling),
        token_rewards=rewards, references=[e.target for e in examples], sequence_reward=rouge_reward,
        guidance=guidance, on_step=_step_log(f"{method} iteration {iteration}", steps), accelerator=accelerator,
    )  # fmt: skip
    stats = {
        "policy/loss": sum(h["loss"] for h in history) / max(len(history), 1),
        "seconds_per_step": sum(h["seconds"] for h in history) / max(len(history), 1),
        "step_losses": [h["loss"] for h in history],  # MLflow's per-step curve train/policy_loss
    }
    if method == "pgg":
        stats["policy/first_token_weight"] = first_weight
    write_once(
        accelerator,
        lambda: save_policy(
            model, tokenizer, out, {"method": method, "iteration": iteration, **stats}, policy_spec(models)
        ),
    )
    return stats


@task(task_run_name="evaluate-{split}")
def evaluate_policy(policy_dir: Path, split: str, config: Config, n_examples: int = 8) -> dict:
    """Greedy decoding on a split; ROUGE-1/2/L/Lsum F1 in percent plus a few example outputs."""
    models, sampling = config.models.summarization, config.sampling.summarization
    tokenizer, model = load_policy(
        policy_dir, models.freeze_encoder, device=pick_device(config.runtime.device)
    )
    examples = data.read_summaries(split_file(config, split))
    limit = config.eval.summarization.max_examples
    examples = examples[:limit] if limit else examples
    sources = _sources(examples, cache_file(config, split), tokenizer, models, sampling)
    predictions = greedy_texts(
        model, tokenizer, sources, len(examples), config.eval.summarization.batch_size,
        sampling.max_target_tokens,
    )  # fmt: skip
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
    check_prepared(config)  # a stale split (other data.summarization params) stops here
    apply_runtime(config.runtime)
    models, sampling = config.models.summarization, config.sampling.summarization
    caches = {}
    for split, target, made_by in _encoder_caches(config):  # each remade unless made under these inputs
        caches[split] = encode_split.with_options(refresh_cache=needs_remaking(target, made_by))(
            split_file(config, split), str(target), models, sampling
        )
        write_record(target, WARMSTART_STAGE, made_by)
    out, made_by = runs_dir(config) / "warmstart", _warm_start_made_by(config)
    warm = warm_start.with_options(refresh_cache=needs_remaking(out, made_by) or not is_complete(out))(
        split_file(config, "train"),
        caches.get("train"),
        str(out),
        models,
        config.policy.summarization,
        sampling,
        config.runtime.seed,
        hardware(config.runtime),
    )
    write_record(out, WARMSTART_STAGE, made_by)
    return warm


def _encoder_caches(config: Config) -> list[tuple[str, Path, str]]:
    """(split, cache file, fingerprint it must be made under) of every split; none with a live encoder."""
    return [
        (
            split,
            cache_file(config, split),
            stage_fingerprint(config, WARMSTART_STAGE, split_file(config, split)),
        )
        for split in data.SPLITS
        if cache_file(config, split) is not None
    ]


def _warm_start_made_by(config: Config) -> str:
    return stage_fingerprint(config, WARMSTART_STAGE, split_file(config, "train"))


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
    # not state.json: it holds wall-clock seconds
    weights = sorted([*Path(warm).glob("*.safetensors"), *Path(warm).glob(REFERENCE_FILE)])
    # the code too: an iteration of other code is stale, as DVC sees the stage (the same closure)
    # runtime.threads: the thread count changes CPU sums' last bits, and seqpg's samples with them
    return content_hash(
        method, config.runtime.seed, config.runtime.threads, weights, code_hash(f"align_{method}"), *sections
    )


def _warm_start_on_disk(config: Config) -> Path:
    """The warm start is the align stage's input (DVC made it in the stage before). Reused only if it
    and the encoder cache were made under this stage's code and the warm-start stage's params and data
    (flows/provenance.py); else (missing, or made by a run with other params or code) made again here."""
    warm = runs_dir(config) / "warmstart"
    current = is_complete(warm) and made_under(warm, _warm_start_made_by(config))
    if current and all(made_under(target, made_by) for _, target, made_by in _encoder_caches(config)):
        return warm
    return warmstart_flow(config)


def _refit_due(method: str, guidance: Path | None, first_step: int, loop) -> bool:
    """pgg refits before the first block and before every block that starts before refit_until."""
    return method == "pgg" and (guidance is None or first_step < loop.refit_until)


def _show_guidance(config: Config, guidance: Path, lists: list[RankedList], iteration: int, report: dict):
    """The picture of the method, to MLflow: what the new guidance rewards, and the sampled lists."""
    shown = sample_token_rewards(
        guidance, lists, config.models.summarization, config.sampling.summarization, iteration
    )
    reporting.log_token_heatmap(
        shown, f"iter-{iteration}", f"{TASK} · token rewards after guidance refit {iteration}"
    )
    reporting.log_sample_table(_sample_rows(lists), f"iter-{iteration}")
    if not report["learned"]:
        get_run_logger().warning(unlearned_guidance(report, iteration, TASK))
    mean_score = sum(sum(x.scores) / len(x.scores) for x in lists) / len(lists)
    return {"preference/mean_score": mean_score, **guidance_metrics(report)}


def _register_policy(config: Config, policy: Path) -> None:
    sampling = config.sampling.summarization
    with standalone_policy(policy) as folder:  # the whole model: the registered one loads without pgg
        reporting.log_policy_model(
            folder,
            Path(__file__).with_name("policy_model.py"),
            registered_name=f"{config.tracking.experiment_prefix}-{TASK}",
            model_config={
                "max_source_tokens": sampling.max_source_tokens,
                "max_new_tokens": sampling.max_target_tokens,
                "source_prefix": config.models.summarization.source_prefix,
            },
        )


def _sample(config: Config, policy: Path, iteration: int) -> list[RankedList]:
    return sample_and_rank.with_options(refresh_cache=False)(
        policy, split_file(config, "train"), cache_file(config, "train"), config.models.summarization,
        config.sampling.summarization, config.guidance.summarization, config.runtime.seed, iteration,
        config.runtime.device,
    )  # fmt: skip


def _fit(config: Config, lists: list[RankedList], previous: Path | None, it) -> dict:
    return fit_guidance(
        lists, previous, it.dir / "guidance", config.models.summarization, config.guidance.summarization,
        config.sampling.summarization, config.runtime.seed, it.number, hardware(config.runtime),
    )  # fmt: skip


def _train(config: Config, method: str, it, policy: Path, guidance: Path | None) -> dict:
    schedule = config.loop.summarization
    first_step = (it.number - 1) * schedule.refit_every
    steps = min(schedule.refit_every, schedule.policy_steps - first_step)
    return train_iteration(
        method, it.number, policy, guidance, it.dir / "policy", config, steps, hardware(config.runtime)
    )


def _metrics(row: dict, stats: dict, evaluation: dict, timer: PhaseTimer) -> dict[str, float]:
    """One iteration's metrics: guidance fit, policy training, validation ROUGE, seconds per phase."""
    row = {**row, **{k: v for k, v in stats.items() if k.startswith("policy/")}}
    row |= {f"val/{k}": v for k, v in evaluation["rouge"].items()}
    row |= {f"seconds/{k}": v for k, v in timer.seconds.items()}
    return {k: float(v) for k, v in row.items() if v == v}  # NaN dropped


@flow(name="summarization-align")
def align_flow(config: Config, method: str) -> list[dict]:
    """Algorithm 1 for one method (pgg; the baselines mle and seqpg skip steps 1-2)."""
    check_reachable(tracking_uri(config))  # before any training, not after the warm start
    check_prepared(config)
    apply_runtime(config.runtime)
    warm, schedule = _warm_start_on_disk(config), config.loop.summarization
    loop = ResumableLoop(runs_dir(config) / method, _fingerprint(config, method, warm))
    policy, guidance, rows, guidance_epochs = warm, None, [], 0
    with pipeline_run(config, TASK, method, extra_tags={"resumed_from": loop.previous_run_id}) as run:
        loop.started(run)
        for it in loop.iterations(1, schedule.iterations):  # an iteration: refit_every policy steps
            if not it.done:  # resume: a complete iteration with the same inputs is kept as it is
                it.restart()
                row, timer = {}, PhaseTimer()
                if _refit_due(method, guidance, (it.number - 1) * schedule.refit_every, schedule):
                    with timer.phase("sample"):  # 1. K summaries per article, ranked by the preference
                        lists = _sample(config, policy, it.number)
                    with timer.phase("guidance"):  # 2. token rewards whose aggregate orders each list
                        report, guidance = _fit(config, lists, guidance, it), it.dir / "guidance"
                    with timer.phase("report"):  # what the new guidance rewards, to MLflow
                        row = _show_guidance(config, guidance, lists, it.number, report)
                with timer.phase("train"):  # 3. improve the LM: weighted MLE with r_t (pgg), MLE, seqpg
                    stats = _train(config, method, it, policy, guidance)
                with timer.phase("evaluate"):  # 4. greedy ROUGE on the validation split
                    evaluation = evaluate_policy(it.dir / "policy", "validation", config)
                it.finish({"metrics": _metrics(row, stats, evaluation, timer)})
            policy = it.dir / "policy"
            guidance = it.dir / "guidance" if (it.dir / "guidance").exists() else guidance
            rows.append(it.state["metrics"])
            mlflow.log_metrics(rows[-1], step=it.number)
            guidance_epochs = log_step_curves(  # read back from the checkpoints, so a resume logs them too
                _state_of(it.dir / "policy").get("step_losses", []), (it.number - 1) * schedule.refit_every,
                _state_of(it.dir / "guidance").get("epoch_losses", []), guidance_epochs,
            )  # fmt: skip
        _finish(config, method, loop, rows, policy)
        loop.compact(_superseded(loop.dir, schedule.iterations, method))
    return rows


def _superseded(method_dir: Path, iterations: int, method: str) -> list[Path]:
    """What only a resume needed: the policies and guidance before the last, and pgg's reference-state
    cache (~70 MB per policy with MiniLM; the final policy and guidance are the stage's results)."""
    folders = [method_dir / f"iter-{i}" for i in range(1, iterations + 1)]
    guidance = [f / "guidance" for f in folders if (f / "guidance").is_dir()]
    earlier = [f / "policy" for f in folders[:-1]] + guidance[:-1]
    cache = [method_dir / REFERENCE_STATES_FILE] if method == "pgg" else []
    return [path for folder in earlier for path in superseded_payload(folder)] + cache


def _state_of(folder: Path) -> dict:
    return read_state(folder) if is_complete(folder) else {}


def _finish(config: Config, method: str, loop: ResumableLoop, rows: list[dict], policy: Path) -> None:
    """Learning curves for `dvc plots` and MLflow; pgg's final policy registered as a model."""
    curve = [{"iteration": i + 1, **r} for i, r in enumerate(rows)]
    loop.write_curve(curve)
    reporting.log_learning_curves({method: curve}, f"{TASK} · {method}")
    if method == "pgg" and config.tracking.register_models:
        _register_policy(config, policy)


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
    check_prepared(config)
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
    with pipeline_run(config, TASK, method, run_id=run_id_of(runs_dir(config) / method)):
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
