"""Discrete prompt generation recipes: prompt search with learned token guidance (pgg) and its baselines.

The frozen task model classifies ``prompt + input``; a policy (frozen LM + trainable MLP adaptor)
writes the prompt. Methods, all on the same data seed and the same number of task-model
evaluations (prompts scored on the training set):
  pgg     sample lists of K prompts -> gap reward -> fit token guidance (listwise) ->
          REINFORCE on the guidance's r_t + max-entropy (components.prompt_losses)
  seqpg   REINFORCE where the whole prompt's gap reward weights every token (mean baseline)
  random  uniform random prompts from the policy's action space
  none    no prompt;  manual  eval.prompt.manual_prompts[dataset]   (no search)

Layout under runs/prompt/{dataset}-{seed}/ (DVC outputs):
  embeddings/{split}.pt         task-model encoding of each split, computed once, shared by all methods
  {method}/iter-0/              warm-up: warmup_lists lists from the initial policy, no update; for pgg
                                they are the first guidance fit's data
  {method}/iter-{i}/            policy steps (i-1)*refit_every+1 .. i*refit_every:
      adaptor.pt, optimizer.pt  policy adaptor and Adam state after the block (pgg, seqpg)
      guidance/                 token reward model fitted before the block (pgg, refit blocks)
      prompts.jsonl             every prompt scored in the block: step, list, prompt, reward, train_accuracy
      state.json                log rows + input fingerprint; written last, marks the block complete
  {method}/curve.json           log rows for `dvc plots`;  pgg/guidance.json: one row per refit
A block whose state.json matches the current inputs is skipped on a rerun (resume after a crash).

Guidance data: each refit fits on the lists scored since the previous refit (the previous block's
prompts.jsonl; the warm-up lists for the first fit), continuing from the previous weights when
guidance.prompt.refit is "warm". Token rewards align with the policy's tokens by id, so the guidance
backbone must share the policy's tokenizer (checked; minilm/tiny policy and guidance share MiniLM's).

MLflow: one run per method in experiment "<prefix>-prompt", tagged with dataset and data seed. The
step of every metric is the policy step (0 = warm-up; a refit before step s+1 logs at step s).
Accuracies in outputs are percentages.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import mlflow
import torch
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from components import data
from components.aggregation import aggregate
from components.gap_reward import accuracy, gap_reward, rank_by_reward, select_prompt
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec, load_tokenizer
from components.preferences import RankedList
from components.prompt_losses import bandit_reinforce_loss, token_guided_reinforce_loss
from components.prompt_policy import PromptPolicy, build_prompt_policy
from components.ranking_losses import pairwise_accuracy
from components.reward_model import TokenRewardModel
from components.task_models import EncodedInputs, build_task_model
from flows.checkpoints import is_complete, load_guidance, read_state, save_guidance
from flows.common import (
    CONTENT_CACHE,
    apply_runtime,
    atomic_write_json,
    atomic_write_text,
    content_hash,
    seed_everything,
    unlearned_guidance,
)
from flows.config import Config
from flows.prepare import prompt_dir
from flows.tracking import pipeline_run

TASK = "prompt"
SEARCH_METHODS = ("pgg", "seqpg", "random")
METHODS = ("none", "manual", *SEARCH_METHODS)
SPLITS = ("train", "dev", "test")
TASK_MODEL_KINDS = {"prototype": "prototype", "prefix_lm": "prefix_lm", "mlm": "masked_lm"}


def run_name(config: Config) -> str:
    return f"{config.data.prompt.dataset}-{config.data.prompt.seed}"


def runs_dir(config: Config) -> Path:
    return config.runtime.runs_dir / TASK / run_name(config)


def metrics_dir(config: Config) -> Path:
    return config.runtime.runs_dir.parent / "metrics" / TASK / run_name(config)


def split_file(config: Config, split: str) -> Path:
    return prompt_dir(config, config.data.prompt.dataset, config.data.prompt.seed) / f"{split}.jsonl"


def embedding_file(config: Config, split: str) -> Path:
    return runs_dir(config) / "embeddings" / f"{split}.pt"


def _check_method(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise ValueError(f"unknown prompt method {method!r}; use one of {', '.join(allowed)}")


def _task_model(task_model: str, name: str, dataset: str, temperature: float, device: torch.device):
    """The frozen task model ``task_model`` (prototype | mlm) on the backbone ``name``."""
    kind = TASK_MODEL_KINDS[task_model]
    kwargs = {"temperature": temperature} if kind in ("prototype", "prefix_lm") else {}
    model = build_task_model(name, dataset, kind, **kwargs)
    (model.model if kind == "masked_lm" else model.encoder).to(device)
    return model


def _load_encoded(path: Path, device: torch.device) -> tuple[EncodedInputs, torch.Tensor]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    encoded = saved["data"].to(device) if isinstance(saved["data"], torch.Tensor) else saved["data"]
    return EncodedInputs(encoded, saved["count"]), saved["labels"].to(device)


def _policy(config: Config, device: torch.device) -> PromptPolicy:
    models, sampling = config.models.prompt, config.sampling.prompt
    return build_prompt_policy(models.policy, sampling.prompt_length, config.policy.prompt.adaptor_hidden).to(
        device
    )


def _check_tokenizers(policy: PromptPolicy, reward_tokenizer) -> None:
    if policy.tokenizer.get_vocab() != reward_tokenizer.get_vocab():
        raise ValueError(
            "models.prompt.reward_backbone has another tokenizer than models.prompt.policy; token rewards "
            "align by token id, so pick a reward backbone of the policy's family (minilm/tiny share one)"
        )


def _read_prompts(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _ranked_lists(records: list[dict]) -> list[RankedList]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["list"]].append(record)
    return [
        RankedList(None, [r["prompt"] for r in group], [r["reward"] for r in group])
        for _, group in sorted(groups.items())
    ]


def _z_score(rewards: torch.Tensor) -> torch.Tensor:
    """Centre over the batch (per position for token rewards), scale by the batch std."""
    centred = rewards - rewards.mean(0, keepdim=True)
    return centred / centred.std().clamp(min=1e-8)


# --- tasks ------------------------------------------------------------------------------------


@task(cache_policy=CONTENT_CACHE, persist_result=True, retries=1, task_run_name="encode-{split}")
def encode_split(
    split_path: Path,
    out: str,
    split: str,
    dataset: str,
    task_model: str,
    task_model_name: str,
    limit: int | None,
) -> Path:
    """Encode a split with the frozen task model once; every method and step reuses it.
    (Outputs are passed as str: the cache key hashes Path arguments by content.)"""
    model = _task_model(task_model, task_model_name, dataset, 1.0, torch.device("cpu"))  # the temperature plays no part here
    examples = data.read_classification(split_path)[:limit]
    encoded = model.encode_inputs([e.text for e in examples])
    payload = {
        "data": encoded.data,
        "count": encoded.count,
        "labels": torch.tensor([e.label for e in examples], dtype=torch.long),
    }
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, out_path)
    return out_path


@task(task_run_name="fit-guidance-step{step}")
def fit_guidance(
    prompts_file: Path, previous: Path | None, out: str, config: Config, iteration: int, step: int
) -> dict:
    """Fit token rewards whose aggregate orders each list of K prompts like the gap reward does."""
    models, guidance = config.models.prompt, config.guidance.prompt
    if previous is not None and guidance.refit == "warm":
        model = load_guidance(previous, freeze_backbone=guidance.freeze_backbone)
        tokenizer = load_tokenizer(models.reward_backbone)
    else:
        tokenizer, model = TokenRewardModel.from_spec(
            ModelSpec(models.reward_backbone, models.reward_backbone_kind),
            head_hidden=guidance.head_hidden,
            squash=guidance.squash,
            freeze_backbone=guidance.freeze_backbone,
        )
    trainer = GuidanceTrainer(
        model,
        tokenizer,
        guidance.trainer_config(
            seed=config.runtime.seed * 1000 + iteration,
            max_length=config.sampling.prompt.prompt_length * 4,
            max_source_length=config.sampling.prompt.prompt_length * 4,
        ),
    )
    report = trainer.fit(_ranked_lists(_read_prompts(prompts_file))).as_dict()
    save_guidance(model, Path(out), {"iteration": iteration, "step": step, **report})
    return report


@task(task_run_name="search-{method}-iter{iteration}")
def search_block(
    method: str,
    iteration: int,
    start: Path | None,
    guidance_dir: Path | None,
    history: list[Path],
    out: str,
    config: Config,
) -> list[dict]:
    """One block of the search: iteration 0 is the warm-up (warmup_lists lists, no update), iteration i
    runs policy steps (i-1)*refit_every+1 .. i*refit_every. Writes adaptor, optimizer and prompts.jsonl
    into ``out``; returns the log rows (one per log_every steps and one at the block's end)."""
    device = apply_runtime(config.runtime)
    sampling, settings, loop = config.sampling.prompt, config.eval.prompt, config.loop.prompt
    reward = config.reward.prompt
    dataset = config.data.prompt.dataset
    generator = seed_everything(config.runtime.seed * 1000 + iteration)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    policy = _policy(config, device)
    optimizer = torch.optim.Adam(policy.adaptor.parameters(), lr=config.policy.prompt.lr)
    if start is not None and method != "random":
        policy.load_adaptor(start / "adaptor.pt")
        optimizer.load_state_dict(torch.load(start / "optimizer.pt", weights_only=True))
    models = config.models.prompt
    task_model = _task_model(
        models.task_model, models.task_model_name, dataset, config.reward.prompt.task_temperature, device
    )
    train, labels = _load_encoded(embedding_file(config, "train"), device)
    dev, dev_labels = _load_encoded(embedding_file(config, "dev"), device)
    reward_model = None
    if method == "pgg" and iteration > 0:
        reward_model = load_guidance(guidance_dir, freeze_backbone=True, device=device)
        _check_tokenizers(policy, load_tokenizer(config.models.prompt.reward_backbone))

    # Best prompt so far by mean training reward (as the final selection ranks), over earlier blocks too.
    rewards_of: dict[str, list[float]] = defaultdict(list)
    train_accuracy_of: dict[str, float] = {}
    for path in history:
        for record in _read_prompts(path):
            rewards_of[record["prompt"]].append(record["reward"])
            train_accuracy_of[record["prompt"]] = record["train_accuracy"]
    dev_accuracy_of: dict[str, float] = {}
    evaluations = sum(len(v) for v in rewards_of.values())

    batch = sampling.lists_per_step * sampling.k
    if iteration == 0:
        steps = [0] * -(-sampling.warmup_lists // sampling.lists_per_step)
    else:
        first = (iteration - 1) * loop.refit_every + 1
        steps = list(range(first, min(first + loop.refit_every, loop.policy_steps + 1)))
    records, rows, window, list_index = [], [], defaultdict(list), 0
    started = time.perf_counter()
    for position, step in enumerate(steps):
        n = (
            batch
            if iteration > 0
            else min(batch, (sampling.warmup_lists - position * sampling.lists_per_step) * sampling.k)
        )
        if method == "random":
            ids, texts = policy.random_prompts(n, generator=generator)
        else:
            ids, texts = policy.sample(
                n, top_k=sampling.top_k, temperature=sampling.temperature, generator=generator
            )
        probs = task_model.class_probs(texts, train)
        rewards = gap_reward(
            probs, labels, reward.gap_positive, reward.gap_negative, reward.reward_fraction, generator
        )
        train_accuracies = accuracy(probs, labels)
        for j, (text, reward, acc) in enumerate(
            zip(texts, rewards.tolist(), train_accuracies.tolist(), strict=True)
        ):
            records.append(
                {"step": step, "list": list_index + j // sampling.k, "prompt": text, "reward": reward,
                 "train_accuracy": 100 * acc}
            )  # fmt: skip
            rewards_of[text].append(reward)
            train_accuracy_of[text] = 100 * acc
        list_index += n // sampling.k
        evaluations += n
        window["reward"] += rewards.tolist()

        if iteration > 0 and method in ("pgg", "seqpg"):
            log_probs, entropy = policy.log_probs_and_entropy(ids)
            alpha, normalize = config.policy.prompt.entropy_coef, config.policy.prompt.normalize_rewards
            if method == "pgg":
                with torch.no_grad():
                    token_rewards = reward_model(ids, torch.ones_like(ids))
                k, length = sampling.k, ids.shape[1]
                scores = aggregate(
                    token_rewards.view(-1, k, length),
                    torch.ones(n // k, k, length, device=device),
                    config.guidance.prompt.aggregation,
                    config.guidance.prompt.tau,
                )
                correct, total = pairwise_accuracy(scores, rewards.view(-1, k))
                window["guidance_correct"].append(correct)
                window["guidance_pairs"].append(total)
                weights = _z_score(token_rewards) if normalize else token_rewards
                loss = token_guided_reinforce_loss(log_probs, entropy, weights, alpha)
            else:
                sequence_rewards = rewards / rewards.std().clamp(min=1e-8) if normalize else rewards
                loss = bandit_reinforce_loss(log_probs, entropy, sequence_rewards, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            window["loss"].append(loss.item())
            window["entropy"].append(entropy.mean().item())

        if position == len(steps) - 1 or (step > 0 and step % settings.log_every == 0):
            best = max(rewards_of, key=lambda p: sum(rewards_of[p]) / len(rewards_of[p]))
            if best not in dev_accuracy_of:
                dev_accuracy_of[best] = 100 * accuracy(task_model.class_probs([best], dev), dev_labels).item()
            row = {
                "step": step,
                "evaluations": evaluations,
                "reward/mean": sum(window["reward"]) / len(window["reward"]),
                "reward/max": max(window["reward"]),
                "best/train_reward": sum(rewards_of[best]) / len(rewards_of[best]),
                "best/train_accuracy": train_accuracy_of[best],
                "best/dev_accuracy": dev_accuracy_of[best],
                "seconds/step": (time.perf_counter() - started) / (position + 1),
                "best_prompt": best,
            }
            if window["entropy"]:
                row["policy/entropy"] = sum(window["entropy"]) / len(window["entropy"])
                row["policy/loss"] = sum(window["loss"]) / len(window["loss"])
            if sum(window["guidance_pairs"]):
                row["guidance/online_accuracy"] = sum(window["guidance_correct"]) / sum(
                    window["guidance_pairs"]
                )
            rows.append(row)
            window = defaultdict(list)

    if method != "random":
        policy.save_adaptor(out_dir / "adaptor.pt")
        torch.save(optimizer.state_dict(), out_dir / "optimizer.pt")
    atomic_write_text(out_dir / "prompts.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return rows


@task
def prompt_accuracies(
    prompts: list[str] | None, splits: tuple[str, ...], config: Config
) -> dict[str, list[float]]:
    """Accuracy (%) of each prompt on each split's cached encoding; ``None``: the no-prompt baseline."""
    device = apply_runtime(config.runtime)
    models = config.models.prompt
    task_model = _task_model(
        models.task_model,
        models.task_model_name,
        config.data.prompt.dataset,
        config.reward.prompt.task_temperature,
        device,
    )
    out = {}
    for split in splits:
        inputs, labels = _load_encoded(embedding_file(config, split), device)
        if prompts is None:
            out[split] = [100 * accuracy(task_model.no_prompt_class_probs(inputs), labels).item()]
            continue
        out[split] = []
        for start in range(0, len(prompts), 64):
            probs = task_model.class_probs(prompts[start : start + 64], inputs)
            out[split] += [100 * a for a in accuracy(probs, labels).tolist()]
    return out


# --- flows ------------------------------------------------------------------------------------


@flow(name="prompt-embed")
def embed_flow(config: Config) -> dict[str, Path]:
    """Encode train/dev/test once with the frozen task model (test capped by eval.prompt.max_test_examples)."""
    apply_runtime(config.runtime)
    return _embed(config)


def _embed(config: Config) -> dict[str, Path]:
    """The encode tasks inside the calling flow (cheaper than a subflow; cached either way)."""
    models, dataset = config.models.prompt, config.data.prompt.dataset
    out = {}
    for split in SPLITS:
        target = embedding_file(config, split)
        limit = config.eval.prompt.max_test_examples if split == "test" else None
        out[split] = encode_split.with_options(refresh_cache=not target.exists())(
            split_file(config, split),
            str(target),
            split,
            dataset,
            models.task_model,
            models.task_model_name,
            limit,
        )
    return out


def _fingerprint(config: Config, method: str) -> str:
    """What a block's result depends on; a complete block with another fingerprint is stale."""
    settings = config.eval.prompt
    reward = config.reward.prompt
    sections = [config.models.prompt, config.sampling.prompt, config.policy.prompt, config.loop.prompt]
    if method == "pgg":
        sections.append(config.guidance.prompt)
    return content_hash(
        method,
        config.runtime.seed,
        split_file(config, "train"),
        split_file(config, "dev"),
        reward,
        settings.log_every,
        *sections,
    )


def _log_rows(rows: list[dict]) -> None:
    for row in rows:
        mlflow.log_metrics(
            {k: float(v) for k, v in row.items() if k not in ("step", "best_prompt")}, step=row["step"]
        )
    if rows:
        mlflow.set_tag("best_prompt", rows[-1]["best_prompt"])


def _guidance_metrics(report: dict) -> dict[str, float]:
    keys = (
        "val_pairwise_accuracy",
        "val_kendall_tau",
        "val_loss",
        "chance_val_loss",
        "train_loss",
        "epochs_run",
    )
    return {f"guidance/{k}": float(report[k]) for k in keys if k in report and report[k] == report[k]}


@flow(name="prompt-search")
def search_flow(config: Config, method: str) -> list[dict]:
    """The search for one method (pgg, seqpg, random): warm-up, then blocks of refit_every steps."""
    _check_method(method, SEARCH_METHODS)
    if method == "pgg" and config.guidance.prompt.preference != "task":
        raise ValueError(
            f"guidance.prompt.preference is {config.guidance.prompt.preference!r}; the prompt task ranks "
            "prompts by the task model's gap reward, so set it to 'task'"
        )
    apply_runtime(config.runtime)
    _embed(config)
    loop = config.loop.prompt
    method_dir = runs_dir(config) / method
    method_dir.mkdir(parents=True, exist_ok=True)
    run_id_file = method_dir / "mlflow_run_id"
    previous_run = run_id_file.read_text().strip() if run_id_file.exists() else None
    fingerprint = _fingerprint(config, method)
    tags = {"dataset": config.data.prompt.dataset, "data_seed": str(config.data.prompt.seed)}
    rows: list[dict] = []
    refits: list[dict] = []
    start, guidance_dir, history = None, None, []

    with pipeline_run(config, TASK, method, extra_tags={**tags, "resumed_from": previous_run or ""}) as run:
        run_id_file.write_text(run.info.run_id)
        for iteration in range(loop.iterations + 1):
            fingerprint = content_hash(fingerprint, iteration)
            iter_dir = method_dir / f"iter-{iteration}"
            first_step = max(iteration - 1, 0) * loop.refit_every
            if is_complete(iter_dir) and read_state(iter_dir).get("fingerprint") == fingerprint:
                state = read_state(iter_dir)  # resume: this block is already done
                if state.get("guidance"):
                    guidance_dir = iter_dir / "guidance"
                    refits.append({"step": first_step, **_guidance_metrics(state["guidance"])})
                    mlflow.log_metrics(_guidance_metrics(state["guidance"]), step=first_step)
            else:
                shutil.rmtree(iter_dir, ignore_errors=True)
                report = None
                if (
                    method == "pgg"
                    and iteration > 0
                    and (guidance_dir is None or first_step < loop.refit_until)
                ):
                    report = fit_guidance(
                        history[-1], guidance_dir, str(iter_dir / "guidance"), config, iteration, first_step
                    )
                    guidance_dir = iter_dir / "guidance"
                    if not report["learned"]:
                        get_run_logger().warning(unlearned_guidance(report, iteration, TASK))
                    refits.append({"step": first_step, **_guidance_metrics(report)})
                    mlflow.log_metrics(_guidance_metrics(report), step=first_step)
                block_rows = search_block(
                    method, iteration, start, guidance_dir, history, str(iter_dir), config
                )
                state = {"fingerprint": fingerprint, "rows": block_rows, "guidance": report}
                atomic_write_json(iter_dir / "state.json", state)
            _log_rows(state["rows"])
            rows += state["rows"]
            start = iter_dir
            history.append(iter_dir / "prompts.jsonl")
        atomic_write_json(method_dir / "curve.json", rows)
        mlflow.log_dict({"steps": rows}, "curve.json")
        if method == "pgg":
            atomic_write_json(method_dir / "guidance.json", refits)
    return rows


def _search_prompts(config: Config, method: str) -> list[dict]:
    method_dir = runs_dir(config) / method
    blocks = [method_dir / f"iter-{i}" for i in range(config.loop.prompt.iterations + 1)]
    missing = [b for b in blocks if not is_complete(b)]
    if missing:
        raise ValueError(
            f"{method} search is incomplete ({missing[0]} has no state.json); run `python -m flows "
            f"prompt-train --method {method}` first"
        )
    return [record for block in blocks for record in _read_prompts(block / "prompts.jsonl")]


@flow(name="prompt-evaluate")
def evaluate_flow(config: Config, method: str) -> dict:
    """Test accuracy of one method into metrics/prompt/{dataset}-{seed}/{method}.json.

    Search methods: rank their prompts by mean training reward, keep the top eval.prompt.candidates,
    select the best on dev, and report its test accuracy and the mean test accuracy of the top
    eval.prompt.top_prompts on dev. The full candidate table goes to MLflow."""
    _check_method(method, METHODS)
    apply_runtime(config.runtime)
    _embed(config)
    settings, dataset = config.eval.prompt, config.data.prompt.dataset
    table = None
    if method in ("none", "manual"):
        if method == "manual" and dataset not in settings.manual_prompts:
            raise ValueError(f"eval.prompt.manual_prompts has no prompt for {dataset!r}; add one")
        prompts = None if method == "none" else [settings.manual_prompts[dataset]]
        scores = prompt_accuracies(prompts, ("dev", "test"), config)
        metrics = {"test_accuracy": scores["test"][0], "dev_accuracy": scores["dev"][0], "evaluations": 0}
        prompt = prompts[0] if prompts else ""
    else:
        records = _search_prompts(config, method)
        ranked = rank_by_reward([r["prompt"] for r in records], [r["reward"] for r in records])
        candidates = [p for p, _ in ranked[: settings.candidates]]
        scores = prompt_accuracies(candidates, ("dev", "test"), config)
        dev, test = scores["dev"], scores["test"]
        selection = select_prompt(candidates, dev, test, top=settings.top_prompts)
        metrics = {
            "test_accuracy": selection.test_accuracy,
            "top_test_accuracy": selection.top_test_accuracy,
            "dev_accuracy": selection.dev_accuracy,
            "evaluations": len(records),
        }
        prompt = selection.prompt
        train_accuracy = {r["prompt"]: r["train_accuracy"] for r in records}
        table = {
            "prompt": candidates,
            "train_reward": [reward for _, reward in ranked[: settings.candidates]],
            "train_accuracy": [train_accuracy[p] for p in candidates],
            "dev_accuracy": dev,
            "test_accuracy": test,
            "selected": [p == prompt for p in candidates],
        }
    metrics = {k: round(float(v), 3) for k, v in metrics.items()}
    metrics["n_test"] = len(_load_encoded(embedding_file(config, "test"), torch.device("cpu"))[1])
    atomic_write_json(metrics_dir(config) / f"{method}.json", metrics)

    run_id_file = runs_dir(config) / method / "mlflow_run_id"
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    tags = {"dataset": dataset, "data_seed": str(config.data.prompt.seed)}
    with pipeline_run(config, TASK, method, run_id=run_id, extra_tags=None if run_id else tags):
        mlflow.log_metrics({f"test/{k}": v for k, v in metrics.items() if k != "n_test"})
        mlflow.set_tag("selected_prompt", prompt)
        if table is not None:
            mlflow.log_table(table, "prompts.json")
    create_markdown_artifact(
        key=f"prompt-{run_name(config)}-{method}".replace("_", "-").replace(".", "-").lower(),
        markdown=f"### {method} on {run_name(config)}: prompt {prompt!r}\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in metrics.items()),
    )
    return {**metrics, "prompt": prompt}


@flow(name="prompt")
def prompt_pipeline(config: Config) -> dict:
    """Everything for data.prompt: embeddings, each search, and the test evaluation of every method."""
    embed_flow(config)
    for method in SEARCH_METHODS:
        search_flow(config, method)
    return {method: evaluate_flow(config, method) for method in METHODS}
