"""Can any prompt guidance order fresh prompts, and how well could it? The cheapest diagnostic (#14)

    python -m bench.prompt_guidance_fresh [--seed 13] [--threads 2]

On the GPU the learned token reward ordered the moving policy's fresh prompts at 0.59-0.60 pairwise, and
pgg lost to seqpg and random search on the prefix-LM task model (BENCHMARKS prompt_surrogate). Before
any more policy steps: is that the reward model (capacity, data) or the preference itself? For each
task model, prompts of the untrained policy are scored as the search scores them (batches of
lists_per_step x k prompts on one 80 % example subset of the 32-row train split, lists of k consecutive
prompts), then:

- guidance variants are fitted on the first 128 lists (the quick default's warm-up), 384 or 1,024, and
  scored on 96 fresh lists of the same policy that no fit saw (held-out pairwise accuracy, Kendall tau);
- the ceiling: the same 96 fresh lists scored again on other example subsets: how often the gap reward
  agrees with itself on a pair. No learned reward can order pairs the target itself flips.

Writes the ``prompt_guidance_fresh`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from bench.prompt_surrogate import TaskModel, config_for, seed_everything
from bench.report import markdown_table, write_section
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec
from components.preferences import RankedList
from components.prompt_policy import build_prompt_policy
from components.prompt_trainer import PromptTrainer
from components.ranking_losses import pairwise_accuracy
from components.reward_model import TokenRewardModel
from flows.config import DEFAULT_PARAMS

FIT_LISTS, FRESH_LISTS = (128, 384, 1024), 96
VARIANTS = {  # name -> (freeze_backbone, trainable_layers, lr)
    "frozen backbone, head lr 1e-3": (True, None, 1e-3),
    "top 2 layers, lr 5e-5 (default)": (False, 2, 5e-5),
    "all layers, lr 5e-5": (False, None, 5e-5),
}


def scored_lists(trainer: PromptTrainer, task: TaskModel, n_lists: int, k: int, per_batch: int, generator):
    """``n_lists`` lists of k prompts of the policy, scored in batches as the search scores them."""
    lists = []
    while len(lists) < n_lists:
        _, texts = trainer.sample(per_batch * k, generator)
        rewards = trainer.score(texts, *task.splits["train"], generator)[0].tolist()
        lists += [RankedList(None, texts[i : i + k], rewards[i : i + k]) for i in range(0, len(texts), k)]
    return lists[:n_lists]


def rescored(trainer: PromptTrainer, task: TaskModel, lists: list[RankedList], generator) -> list[RankedList]:
    """The same lists scored again, each on a newly drawn example subset (the target's own noise)."""
    return [
        RankedList(
            None,
            ranked.candidates,
            trainer.score(ranked.candidates, *task.splits["train"], generator)[0].tolist(),
        )
        for ranked in lists
    ]


def run_task_model(task_model: str, seed: int) -> list[list[str]]:
    config = config_for(DEFAULT_PARAMS, "sst-2", seed, task_model, "pgg", {"runtime.device": "cpu"})
    task = TaskModel(config, torch.device("cpu"))
    generator = seed_everything(config.runtime.seed * 1000)
    models, sampling = config.models.prompt, config.sampling.prompt
    policy = build_prompt_policy(models.policy, sampling.prompt_length, config.policy.prompt.adaptor_hidden)
    trainer = PromptTrainer(policy, task.model, config.prompt_train_config("pgg"))
    started = time.perf_counter()
    pool = scored_lists(
        trainer, task, max(FIT_LISTS) + FRESH_LISTS, sampling.k, sampling.lists_per_step, generator
    )
    fit_pool, fresh = pool[: max(FIT_LISTS)], pool[max(FIT_LISTS) :]
    again = rescored(trainer, task, fresh, generator)
    scoring = time.perf_counter() - started
    truth = torch.tensor([r.scores for r in fresh])
    correct, pairs = pairwise_accuracy(torch.tensor([r.scores for r in again]), truth)
    rows = [
        [
            task_model,
            "the gap reward on other example subsets (ceiling)",
            "-",
            f"{correct / pairs:.3f}",
            "-",
            "-",
        ]
    ]
    length = sampling.prompt_length * 4
    for name, (frozen, layers, lr) in VARIANTS.items():
        for n in FIT_LISTS:
            guidance = config.guidance.prompt.model_copy(
                update={"freeze_backbone": frozen, "trainable_layers": layers, "lr": lr}
            )
            settings = guidance.trainer_config(
                seed=config.runtime.seed * 1000 + 1, max_length=length, max_source_length=length
            )
            torch.manual_seed(settings.seed)
            tokenizer, model = TokenRewardModel.from_spec(
                ModelSpec(models.reward_backbone, models.reward_backbone_kind), head_hidden=guidance.head_hidden,
                squash=guidance.squash, freeze_backbone=frozen, trainable_layers=layers,
            )  # fmt: skip
            fit_trainer = GuidanceTrainer(model, tokenizer, settings)
            started = time.perf_counter()
            fit_trainer.fit(fit_pool[:n], None)
            metrics = fit_trainer.evaluate(fresh)
            rows.append([
                task_model, name, str(n), f"{metrics['pairwise_accuracy']:.3f}", f"{metrics['kendall_tau']:.3f}",
                f"{time.perf_counter() - started:.0f}",
            ])  # fmt: skip
            print(rows[-1], flush=True)
    rows.append(
        [
            task_model,
            f"(scoring {len(pool) * sampling.k + len(fresh) * sampling.k} prompts: {scoring:.0f} s)",
            "",
            "",
            "",
            "",
        ]
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task-models", nargs="+", default=["prototype", "prefix_lm"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loads = [os.getloadavg()[0]]
    rows = []
    for task_model in args.task_models:
        rows += run_task_model(task_model, args.seed)
        loads.append(os.getloadavg()[0])
    table = markdown_table(
        ["task model", "orders the fresh lists", "fit lists", "pairwise acc", "Kendall tau", "fit s"], rows
    )
    body = f"""SST-2, data seed {args.seed}, `params.yaml` (prefix LM: reward temperature 0.01). Prompts of the untrained
policy, scored in batches of 20 on one 80 % example subset each, lists of 5 consecutive prompts (as the search
scores them). Each guidance variant is fitted on the first 128, 384 or 1,024 lists (its own 20 % held out for early
stopping) and scored on {FRESH_LISTS} fresh lists no fit saw; 0.5 is chance. The ceiling row scores the same fresh
lists again on newly drawn example subsets and counts the pairs both scorings order alike.

{table}

{args.threads} torch threads; load average {min(loads):.1f}-{max(loads):.1f}."""
    write_section(
        "prompt_guidance_fresh",
        "Prompt guidance on fresh prompts, and the target's own ceiling (issue #14)",
        body,
    )


if __name__ == "__main__":
    main()
