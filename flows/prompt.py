"""Discrete prompt generation recipes: prompt search with learned token guidance (pgg) and its baselines.

The frozen task model classifies ``prompt + input``; a policy (frozen LM + trainable MLP adaptor)
writes the prompt. Methods, all on the same data seed and the same number of task-model
evaluations (prompts scored on the training set):
  pgg     sample lists of K prompts -> gap reward -> fit token guidance (listwise) ->
          REINFORCE on the guidance's r_t + max-entropy (components.prompt_losses)
  seqpg   REINFORCE where the whole prompt's gap reward weights every token (mean baseline)
  random  uniform random prompts from the policy's action space
  none    no prompt;  manual  eval.prompt.manual_prompts[dataset]   (no search)
The search itself (a block's steps, the refit schedule, both selections) is components.prompt_search;
this module runs it as Prefect tasks with checkpoints, resume and MLflow. bench/ calls these flows.

Layout under runs/prompt/{dataset}-{seed}/ (DVC outputs):
  embeddings/{split}.pt         task-model encoding of each split, computed once, shared by all methods;
                                reused only if its {split}.pt.made_by.json matches (flows/provenance.py)
  {method}/iter-0/              warm-up: warmup_lists lists from the initial policy, no update; for pgg
                                they are the first guidance fit's data
  {method}/iter-{i}/            policy steps (i-1)*refit_every+1 .. i*refit_every:
      adaptor.pt, optimizer.pt  policy adaptor and Adam state after the block (pgg, seqpg); a finished
                                search keeps the last adaptor only (the rest were resume points)
      guidance/                 token reward model fitted before the block (pgg, refit blocks)
      prompts.jsonl             every prompt scored in the block: step, batch (one score call), list, prompt,
                                reward, train_accuracy
      state.json                log rows, the policy's ranked prompts after the block (policy selection),
                                input fingerprint; written last, marks the block complete
  {method}/curve.json           log rows for `dvc plots`;  pgg/guidance.json: one row per refit
A block whose state.json matches the current inputs and code is skipped on a rerun (resume after a
crash); a finished search run again is redone.
Evaluation writes metrics/prompt/{dataset}-{seed}/{method}.json and, for a search, {method}_queries.json:
both selections after every block against the task-model queries spent (the sample-efficiency curve).

Guidance data: each refit fits on the lists of the last guidance.prompt.window_blocks blocks (1: those
scored since the previous refit, the warm-up lists for the first fit; null: every list so far), as
sampled (K consecutive prompts) or, with resampled_lists n, n lists of K drawn from each scored batch
(the prompts of one score call share an example subset; whole batches are held out), continuing from the previous weights when
guidance.prompt.refit is "warm". Token rewards align with the policy's tokens by id, so the guidance
backbone must share the policy's tokenizer (checked; minilm/tiny policy and guidance share MiniLM's).

MLflow: one run per method in experiment "<prefix>-prompt", tagged with dataset and data seed. The
step of every metric is the policy step (0 = warm-up; a refit before step s+1 logs at step s), except
queries/*: both selections' accuracies with the task-model queries spent so far as the step.
Accuracies in outputs are percentages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import torch
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from components import data
from components.gap_reward import accuracy
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec, load_tokenizer
from components.preferences import resampled_lists
from components.prompt_policy import PromptPolicy, build_prompt_policy
from components.prompt_search import (
    authors_pick,
    guidance_window,
    queries_by_use,
    rank_policy_prompts,
    ranked_lists,
    refit_due,
    run_block,
    scored_batches,
    selections,
)
from components.prompt_trainer import ADAPTOR_FILE, OPTIMIZER_FILE, PromptTrainer
from components.reward_model import TokenRewardModel
from components.task_models import EncodedInputs, build_task_model, template_for, verbalizers_for
from components.task_models import check_verbalizers as check_one_token
from flows.checkpoints import is_complete, load_guidance, read_state, save_guidance, superseded_payload
from flows.common import (
    CONTENT_CACHE,
    apply_runtime,
    atomic_write_json,
    atomic_write_text,
    content_hash,
    guidance_metrics,
    seed_everything,
    unlearned_guidance,
)
from flows.config import Config
from flows.prepare import prompt_dir
from flows.progress import loss_callback
from flows.provenance import needs_remaking, stage_fingerprint, write_record
from flows.resume import ResumableLoop, run_id_of
from flows.stage_code import code_hash
from flows.tracking import log_step_curves, pipeline_run

TASK = "prompt"
SEARCH_METHODS = ("pgg", "seqpg", "random")
METHODS = ("none", "manual", *SEARCH_METHODS)
SPLITS = ("train", "dev", "test")
FRESH_FILE = "fresh_prompts.jsonl"  # a refit's freshly scored prompts (guidance.prompt.fresh_prompts)
EMBED_STAGE = "prompt_embed"  # the DVC stage whose output is embeddings/, which every method reads
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


def task_words(config: Config) -> tuple[tuple[str, ...], str | None]:
    """data.prompt's verbalizers and cloze template: the params', else the preset's."""
    settings = config.data.prompt
    verbalizers = settings.verbalizers or verbalizers_for(settings.dataset)
    template = settings.template or (template_for(settings.dataset) if settings.is_preset else None)
    return verbalizers, template


def check_verbalizers(config: Config) -> None:
    """VerbalizerError unless every verbalizer is one token of the task model's tokenizer (cheap: the
    tokenizer only), so a bad word stops a stage before anything runs."""
    check_one_token(task_words(config)[0], load_tokenizer(config.models.prompt.task_model_name))


def _task_model(
    task_model: str, name: str, words: tuple[tuple[str, ...], str | None], temperature: float, device
):
    """The frozen task model ``task_model`` (prototype | prefix_lm | mlm) on the backbone ``name``, with
    ``words``: the verbalizers and cloze template of ``task_words``."""
    kind = TASK_MODEL_KINDS[task_model]
    kwargs = {"temperature": temperature} if kind in ("prototype", "prefix_lm") else {}
    verbalizers, template = words
    model = build_task_model(name, kind=kind, verbalizers=verbalizers, template=template, **kwargs)
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


# --- tasks ------------------------------------------------------------------------------------


@task(cache_policy=CONTENT_CACHE, persist_result=True, retries=1, task_run_name="encode-{split}")
def encode_split(
    split_path: Path,
    out: str,
    split: str,
    words: tuple[tuple[str, ...], str | None],
    task_model: str,
    task_model_name: str,
    limit: int | None,
) -> Path:
    """Encode a split with the frozen task model once; every method and step reuses it.
    (Outputs are passed as str: the cache key hashes Path arguments by content.)"""
    model = _task_model(
        task_model, task_model_name, words, 1.0, torch.device("cpu")
    )  # the temperature plays no part here
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
    prompts_files: list[Path], previous: Path | None, out: str, config: Config, iteration: int, step: int
) -> dict:
    """Fit token rewards whose aggregate orders each list of K prompts like the gap reward does, on the
    prompts scored in ``prompts_files`` (resampled into new lists per scored batch when configured)."""
    models, guidance = config.models.prompt, config.guidance.prompt
    length = config.sampling.prompt.prompt_length * 4  # tokens: a prompt has no source
    settings = guidance.trainer_config(
        seed=config.runtime.seed * 1000 + iteration, max_length=length, max_source_length=length
    )
    if previous is not None and guidance.refit == "warm":
        model = load_guidance(previous, freeze_backbone=guidance.freeze_backbone)
        tokenizer = load_tokenizer(models.reward_backbone)
    else:
        torch.manual_seed(settings.seed)  # the new head's init: the run's, not the process's RNG state
        tokenizer, model = TokenRewardModel.from_spec(
            ModelSpec(models.reward_backbone, models.reward_backbone_kind),
            head_hidden=guidance.head_hidden,
            squash=guidance.squash,
            freeze_backbone=guidance.freeze_backbone,
            trainable_layers=guidance.trainable_layers,
        )
    files = [_read_prompts(path) for path in prompts_files]
    if guidance.resampled_lists:
        batches = [batch for records in files for batch in scored_batches(records)]
        lists, val_lists = resampled_lists(
            batches, config.sampling.prompt.k, guidance.resampled_lists, guidance.val_fraction,
            torch.Generator().manual_seed(settings.seed),
        )  # fmt: skip
    else:
        lists, val_lists = [ranked for records in files for ranked in ranked_lists(records)], None
    epochs = loss_callback(f"guidance at step {step} (epochs)", settings.epochs, get_run_logger())
    fitted = GuidanceTrainer(model, tokenizer, settings).fit(
        lists, val_lists or None, on_epoch=lambda row: epochs(row["epoch"], row["train_loss"])
    )
    report = {**fitted.as_dict(), "epoch_losses": [h["train_loss"] for h in fitted.history]}
    save_guidance(model, Path(out), {"iteration": iteration, "step": step, **report})
    return report


def _trainer(
    config: Config, method: str, iteration: int, start, guidance_dir, device, resume: bool = True
) -> PromptTrainer:
    """The block's policy (continuing from ``start``; ``resume``: with its optimizer state, to train on),
    task model and, for pgg, fitted token rewards."""
    policy = _policy(config, device)  # built right after seeding: the adaptor's random init
    models = config.models.prompt
    task_model = _task_model(
        models.task_model, models.task_model_name, task_words(config),
        config.reward.prompt.task_temperature, device,
    )  # fmt: skip
    reward_model = None
    if method == "pgg" and iteration > 0:
        reward_model = load_guidance(guidance_dir, freeze_backbone=True, device=device)
        _check_tokenizers(policy, load_tokenizer(models.reward_backbone))
    trainer = PromptTrainer(policy, task_model, config.prompt_train_config(method), reward_model)
    if start is not None and method != "random":
        trainer.load(start, with_optimizer=resume)
    return trainer


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
    into ``out``; returns the log rows (one per log_every steps and one at the block's end) and the
    loss of every real policy update (MLflow's per-step curve)."""
    device = apply_runtime(config.runtime)
    generator = seed_everything(config.runtime.seed * 1000 + iteration)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = _trainer(config, method, iteration, start, guidance_dir, device)
    splits = {split: _load_encoded(embedding_file(config, split), device) for split in ("train", "dev")}
    history_records = [record for path in history for record in _read_prompts(path)]
    steps = config.prompt_block_steps(iteration)
    on_step = loss_callback(f"{method} block {iteration} (steps)", len(steps), get_run_logger())
    block = run_block(
        trainer, method, iteration, steps, generator, splits, history_records,
        config.sampling.prompt.k, config.eval.prompt.log_every, on_step,
    )  # fmt: skip
    if method != "random":
        trainer.save(out_dir)
    atomic_write_text(out_dir / "prompts.jsonl", "".join(json.dumps(r) + "\n" for r in block["records"]))
    result = {"rows": block["rows"], "step_losses": block["step_losses"]}
    if iteration > 0:  # 4. the policy's own prompts at this budget (evaluation's query curve reads them)
        settings = config.eval.prompt
        prompts, scores, queries = rank_policy_prompts(
            trainer, method, settings.policy_samples, config.runtime.seed * 1000 + 999, *splits["train"]
        )
        top = settings.candidates
        result["policy_candidates"] = {"prompts": prompts[:top], "scores": scores[:top], "queries": queries}
        if method != "random":  # the authors' pick: one step's worth of policy samples, best gap reward
            result["authors_pick"] = authors_pick(
                trainer,
                config.sampling.prompt.step_prompts,
                config.runtime.seed * 1000 + 998,
                *splits["train"],
            )
    return result


@task(task_run_name="fresh-prompts-{method}-iter{iteration}")
def score_fresh_prompts(method: str, iteration: int, start: Path, out: str, config: Config) -> int:
    """guidance.prompt.fresh_prompts new prompts of the policy after block ``iteration`` - 1, scored in
    batches of a policy step's size (one example subset each), no update: the data the authors' reward
    fit streams. Writes them to ``out`` as a block's prompts.jsonl; returns how many were scored."""
    device = apply_runtime(config.runtime)
    generator = seed_everything(config.runtime.seed * 1000 + 500 + iteration)
    trainer = _trainer(config, method, 0, start, None, device, resume=False)
    splits = {split: _load_encoded(embedding_file(config, split), device) for split in ("train", "dev")}
    total, batch = config.guidance.prompt.fresh_prompts, config.sampling.prompt.step_prompts
    step = (iteration - 1) * config.loop.prompt.refit_every
    steps = [(step, min(batch, total - done)) for done in range(0, total, batch)]
    block = run_block(
        trainer,
        method,
        0,
        steps,
        generator,
        splits,
        [],
        config.sampling.prompt.k,
        config.eval.prompt.log_every,
    )
    atomic_write_text(Path(out), "".join(json.dumps(r) + "\n" for r in block["records"]))
    return len(block["records"])


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
        task_words(config),
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
    """The encode tasks inside the calling flow (cheaper than a subflow; cached either way). A split's
    encoding on disk is reused only if made under prompt_embed's code, params and data (flows/provenance.py)."""
    models, words = config.models.prompt, task_words(config)
    out = {}
    for split in SPLITS:
        target = embedding_file(config, split)
        limit = config.eval.prompt.max_test_examples if split == "test" else None
        made_by = stage_fingerprint(config, EMBED_STAGE, split_file(config, split))
        out[split] = encode_split.with_options(refresh_cache=needs_remaking(target, made_by))(
            split_file(config, split),
            str(target),
            split,
            words,
            models.task_model,
            models.task_model_name,
            limit,
        )
        write_record(target, EMBED_STAGE, made_by)
    return out


def _fingerprint(config: Config, method: str) -> str:
    """What a block's result depends on; a complete block with another fingerprint is stale."""
    settings = config.eval.prompt
    reward = config.reward.prompt
    sections = [config.models.prompt, config.sampling.prompt, config.policy.prompt, config.loop.prompt]
    if method == "pgg":
        sections.append(config.guidance.prompt)
    data_settings = config.data.prompt
    # a preset's own words are fixed by its name (which names the folder): only params' words count, so
    # complete blocks of a preset stay complete
    words = (
        [] if data_settings.verbalizers is None and data_settings.template is None else [task_words(config)]
    )
    return content_hash(
        method,
        config.runtime.seed,
        config.runtime.threads,  # the thread count changes CPU sums' last bits (docs/reproducibility.md)
        code_hash(f"prompt_{method}"),  # a block of other code is stale, as DVC sees the stage
        split_file(config, "train"),
        split_file(config, "dev"),
        *words,
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


@flow(name="prompt-search")
def search_flow(config: Config, method: str) -> list[dict]:
    """The search for one method (pgg, seqpg, random): a warm-up block, then blocks of refit_every steps."""
    _check_method(method, SEARCH_METHODS)
    _check_preference(config, method)
    apply_runtime(config.runtime)
    _embed(config)
    schedule = config.loop.prompt
    loop = ResumableLoop(runs_dir(config) / method, _fingerprint(config, method))
    tags = {"dataset": config.data.prompt.dataset, "data_seed": str(config.data.prompt.seed)}
    start, guidance, history, rows, refits, guidance_epochs = None, None, [], [], [], 0
    blocks = loss_callback(f"{method} search (blocks)", schedule.iterations + 1, get_run_logger())
    with pipeline_run(config, TASK, method, extra_tags={**tags, "resumed_from": loop.previous_run_id}) as run:
        loop.started(run)
        for it in loop.iterations(0, schedule.iterations):  # block 0: warm-up lists, no update
            first_step = max(it.number - 1, 0) * schedule.refit_every
            if not it.done:  # resume: a complete block with the same inputs is kept as it is
                it.restart()
                report = None
                if refit_due(
                    method, it.number, guidance is not None, first_step, schedule.refit_until
                ):  # 1. fit token rewards on the lists of the last window_blocks blocks (+ fresh prompts)
                    data = guidance_window(history, config.guidance.prompt.window_blocks)
                    if config.guidance.prompt.fresh_prompts and it.number > 1:  # the first fit: the warm-up
                        it.dir.mkdir(parents=True, exist_ok=True)
                        score_fresh_prompts(method, it.number, start, str(it.dir / FRESH_FILE), config)
                        data = [*data, it.dir / FRESH_FILE]
                    report = fit_guidance(
                        data, guidance, str(it.dir / "guidance"), config, it.number, first_step
                    )
                    guidance = it.dir / "guidance"
                    if not report["learned"]:
                        get_run_logger().warning(unlearned_guidance(report, it.number, TASK))
                # 2-3. sample prompts, score them with the task model, update the policy on every step
                block = search_block(method, it.number, start, guidance, history, str(it.dir), config)
                it.finish({**block, "guidance": report})
            if it.state["guidance"]:
                guidance = it.dir / "guidance"
                refits.append({"step": first_step, **guidance_metrics(it.state["guidance"])})
                mlflow.log_metrics(guidance_metrics(it.state["guidance"]), step=first_step)
            _log_rows(it.state["rows"])
            guidance_epochs = log_step_curves(
                it.state.get("step_losses", []), first_step,
                (it.state["guidance"] or {}).get("epoch_losses", []), guidance_epochs,
            )  # fmt: skip
            rows += it.state["rows"]
            start, history = it.dir, [*history, it.dir / "prompts.jsonl"]
            blocks(it.number + 1)
        loop.write_curve(rows)
        if method == "pgg":
            loop.write_curve(refits, "guidance.json")
        loop.compact(_superseded(loop.dir, schedule.iterations))
    return rows


def _superseded(method_dir: Path, iterations: int) -> list[Path]:
    """What only a resume needed: every optimizer state, the adaptors before the last block and the
    guidance before the last refit (evaluation reads the last adaptor and guidance only)."""
    blocks = [method_dir / f"iter-{i}" for i in range(iterations + 1)]
    guidance = [b / "guidance" for b in blocks if (b / "guidance").is_dir()]
    files = [b / OPTIMIZER_FILE for b in blocks] + [b / ADAPTOR_FILE for b in blocks[:-1]]
    return [f for f in files if f.exists()] + [p for g in guidance[:-1] for p in superseded_payload(g)]


def _check_preference(config: Config, method: str) -> None:
    if method == "pgg" and config.guidance.prompt.preference != "task":
        raise ValueError(
            f"guidance.prompt.preference is {config.guidance.prompt.preference!r}; the prompt task ranks "
            "prompts by the task model's gap reward, so set it to 'task'"
        )


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

    Search methods, two selections side by side, so a reader sees whether a policy learned or a search
    got lucky. *Best scored* (``test_accuracy``): rank every prompt the search scored by its mean
    training reward, keep the top eval.prompt.candidates, select the best on dev; also the mean test
    accuracy of the top eval.prompt.top_prompts on dev. *Policy* (``policy_test_accuracy``): the trained
    policy's greedy prompt and eval.prompt.policy_samples of its samples, ranked by the learned reward
    (pgg) or the training reward (seqpg, random: extra task-model queries, counted), the same dev pick.
    The best-scored candidate table goes to MLflow."""
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
        curve = [
            {"queries": 0, "test_accuracy": metrics["test_accuracy"], "dev_accuracy": metrics["dev_accuracy"]}
        ]
        prompt = prompts[0] if prompts else ""
    else:
        records = _search_prompts(config, method)  # checks that the search is complete
        blocks = _search_blocks(config, method)
        last_block = read_state(blocks[-1])
        metrics, chosen = _selections(
            config, records, last_block["policy_candidates"], last_block.get("authors_pick"), _fresh(blocks)
        )
        prompt, table = chosen["prompt"], chosen["table"]
        curve = [*(query_curve(config, method) if settings.query_curve else []),
                 {"queries": metrics["evaluations"], **metrics}]  # fmt: skip
        metrics |= {f"queries_{use}": n for use, n in _queries_by_use(config, method, blocks).items()}
    metrics = {k: round(float(v), 3) for k, v in metrics.items()}
    metrics["n_test"] = len(_load_encoded(embedding_file(config, "test"), torch.device("cpu"))[1])
    atomic_write_json(metrics_dir(config) / f"{method}.json", metrics)
    curve = [{k: round(float(v), 3) if k != "queries" else int(v) for k, v in row.items()} for row in curve]
    atomic_write_json(metrics_dir(config) / f"{method}_queries.json", curve)
    results = selection_results(method, prompt, chosen if table is not None else None)
    # text, so beside the metrics file (`dvc metrics` reads numbers only)
    atomic_write_json(metrics_dir(config) / f"{method}_prompts.json", results)

    run_id = run_id_of(runs_dir(config) / method)
    tags = {"dataset": dataset, "data_seed": str(config.data.prompt.seed)}
    with pipeline_run(config, TASK, method, run_id=run_id, extra_tags=None if run_id else tags):
        mlflow.log_metrics({f"test/{k}": v for k, v in metrics.items() if k != "n_test"})
        mlflow.set_tag("selected_prompt", prompt)
        mlflow.log_dict(results, "selected_prompts.json")
        if table is not None:
            mlflow.set_tag("policy_prompt", chosen["policy_prompt"])
            mlflow.log_table(table, "prompts.json")
        for row in curve:  # x = task-model queries: the sample-efficiency curve in the chart view
            mlflow.log_metrics(
                {f"queries/{k}": v for k, v in row.items() if "accuracy" in k}, step=row["queries"]
            )
    create_markdown_artifact(
        key=f"prompt-{run_name(config)}-{method}".replace("_", "-").replace(".", "-").lower(),
        markdown=f"### {method} on {run_name(config)}: prompt {prompt!r}\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in metrics.items()),
    )
    return {**metrics, "prompt": prompt}


# the one selection every method has, so `dvc metrics show` compares like with like
HEADLINE = "test_accuracy"


def selection_results(method: str, prompt: str, chosen: dict | None) -> dict:
    """What {method}_prompts.json says: the selected prompt(s) and which metric is the headline."""
    if chosen is None:  # none, manual: one fixed prompt, no search
        return {
            "headline": HEADLINE,
            "test_accuracy": {"prompt": prompt, "selection": f"the {method} prompt"},
        }
    results = {
        "headline": HEADLINE,
        "test_accuracy": {
            "prompt": prompt,
            "selection": "best scored: the search's prompts ranked by mean training reward, the top "
            "eval.prompt.candidates picked on dev (evaluations = task-model queries the search spent)",
        },
        "policy_test_accuracy": {
            "prompt": chosen["policy_prompt"],
            "selection": "policy: the trained policy's greedy prompt and samples, ranked by "
            + ("the learned token reward, so policy_selection_evaluations is 0 (no task-model query)"
               if method == "pgg" else "the gap reward (policy_selection_evaluations task-model queries)")
            + ", picked on dev",
        },
    }  # fmt: skip
    if "authors_prompt" in chosen:
        results["authors_test_accuracy"] = {
            "prompt": chosen["authors_prompt"],
            "selection": "the authors' (RLPrompt's): one step's worth of the trained policy's samples scored "
            "by the gap reward on the training split, the highest wins (authors_selection_evaluations "
            "task-model queries), no dev pick",
        }
    return results


def _search_blocks(config: Config, method: str) -> list[Path]:
    return [runs_dir(config) / method / f"iter-{i}" for i in range(config.loop.prompt.iterations + 1)]


def _selections(
    config: Config, records: list[dict], policy: dict, authors: dict | None, fresh: int
) -> tuple[dict[str, float], dict]:
    """components.prompt_search.selections on the cached dev and test encodings."""
    settings = config.eval.prompt
    return selections(
        records, policy, settings.candidates, settings.top_prompts,
        lambda prompts: prompt_accuracies(prompts, ("dev", "test"), config), authors, fresh,
    )  # fmt: skip


def _fresh(blocks: list[Path]) -> int:
    """Fresh prompts scored for the guidance fits before these blocks."""
    return sum(len(_read_prompts(b / FRESH_FILE)) for b in blocks if (b / FRESH_FILE).exists())


def _queries_by_use(config: Config, method: str, blocks: list[Path]) -> dict[str, int]:
    """components.prompt_search.queries_by_use of a finished search, read from its blocks."""
    rows = []
    for block in blocks:
        state = read_state(block)
        spent = [state.get("policy_candidates"), state.get("authors_pick")]
        rows.append({
            "scored": len(_read_prompts(block / "prompts.jsonl")), "fitted": bool(state.get("guidance")),
            "fresh": _fresh([block]), "selection": sum(s["queries"] for s in spent if s),
        })  # fmt: skip
    learned_only = config.policy.prompt.pgg_update == "learned"
    return queries_by_use(method, learned_only, rows, config.guidance.prompt.window_blocks)


def query_curve(config: Config, method: str) -> list[dict]:
    """Both selections after each block of a finished search but the last (whose row is the evaluation's
    own metrics), against the task-model queries spent so far: the sample-efficiency curve. A block's
    policy is exactly the final policy of a search with that budget (nothing in a block depends on the
    blocks after it: constant lr, same seeds, same refit points), so one search gives every budget."""
    rows, records, blocks = [], [], _search_blocks(config, method)
    for number, block in enumerate(blocks[:-1]):
        records += _read_prompts(block / "prompts.jsonl")
        state = read_state(block)
        if state.get("policy_candidates") is not None:
            fresh = _fresh(blocks[: number + 1])
            metrics = _selections(
                config, records, state["policy_candidates"], state.get("authors_pick"), fresh
            )[0]
            rows.append({"queries": metrics["evaluations"], **metrics})
    return rows


@flow(name="prompt")
def prompt_pipeline(config: Config) -> dict:
    """Everything for data.prompt: embeddings, each search, and the test evaluation of every method."""
    embed_flow(config)
    for method in SEARCH_METHODS:
        search_flow(config, method)
    return {method: evaluate_flow(config, method) for method in METHODS}
