"""Which training signal orders prompts by their accuracy on unseen examples? (#14)

    python -m bench.prompt_signal [--seeds 13 21 42 87 100] [--task-models prototype prefix_lm]

bench.prompt_guidance_fresh measured the learned reward against the gap reward it learns from (0.63-0.74
vs the gap reward's own 0.80-0.83). But neither method is judged on the training reward: it is judged on
accuracy on unseen examples. A learned reward generalises across prompts and might smooth the gap
reward's example-subset noise, or it might only add its own error. This measures both against a truth
that no search sees and that is not the test split: accuracy on the train and dev rows of the other four
16-shot data seeds (250 distinct SST-2 training sentences, none in seed 13's splits).

For each task model, fresh prompts of the untrained policy are drawn in batches of lists_per_step x k (20),
the unit a REINFORCE update compares after z-scoring, and each signal is scored by the share of prompt
pairs inside a batch that it orders as the held-out accuracy does (0.5 is chance):

- seqpg's weights: the gap reward on one 80 % subset of the 32 train rows, as the search draws it;
- the gap reward on all 32 train rows (no subset noise; the most the train split can say);
- pgg's weights: the learned reward (sum of token rewards, the default top-2-layer fit) fitted on the
  128 warm-up lists, and on 1,024 lists (twice a search's query budget);
- the two combined: z-scored subset gap reward plus z-scored learned reward (128 lists).

Writes the ``prompt_signal`` section of BENCHMARKS.md. No setting is chosen from it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from bench.prompt_guidance_fresh import scored_lists
from bench.prompt_surrogate import TaskModel, config_for, seed_everything
from bench.report import markdown_table, mean_sd, write_section
from components import data
from components.gap_reward import accuracy, gap_reward
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec
from components.prompt_policy import build_prompt_policy
from components.prompt_trainer import PromptTrainer, z_score
from components.reward_model import TokenRewardModel
from flows.config import DEFAULT_PARAMS

SEEDS = (13, 21, 42, 87, 100)
FIT_LISTS = (128, 1024)
FRESH_BATCHES = 32
MIN_GAPS = (0.0, 3.0)  # pairs whose held-out accuracies differ by more than this many points
NAMES = {
    "subset": "gap reward, one 80 % subset of the 32 train rows (seqpg's weights)",
    "full": "gap reward, all 32 train rows",
    "learned128": "learned reward, fit on the 128 warm-up lists (pgg's weights)",
    "learned1024": "learned reward, fit on 1,024 lists",
    "combined": "z(gap reward, subset) + z(learned reward, 128 lists)",
}


def held_out_rows(config, seed: int) -> tuple[list[str], torch.Tensor]:
    """Train and dev rows of the other data seeds, deduplicated, minus any text of ``seed``'s splits."""
    folder = config.data.prepared_dir / "prompt" / config.data.prompt.dataset
    own = {
        e.text
        for split in ("train", "dev", "test")
        for e in data.read_classification(folder / str(seed) / f"{split}.jsonl")
    }
    rows: dict[str, int] = {}
    for other in SEEDS:
        if other == seed:
            continue
        for split in ("train", "dev"):
            for example in data.read_classification(folder / str(other) / f"{split}.jsonl"):
                if example.text not in own:
                    rows.setdefault(example.text, example.label)
    return list(rows), torch.tensor(list(rows.values()))


def fitted_guidance(config, lists, n: int) -> GuidanceTrainer:
    """The default guidance (params.yaml) fitted on the first ``n`` lists."""
    models, guidance = config.models.prompt, config.guidance.prompt
    length = config.sampling.prompt.prompt_length * 4
    settings = guidance.trainer_config(
        seed=config.runtime.seed * 1000 + 1, max_length=length, max_source_length=length
    )
    torch.manual_seed(settings.seed)
    tokenizer, model = TokenRewardModel.from_spec(
        ModelSpec(models.reward_backbone, models.reward_backbone_kind), head_hidden=guidance.head_hidden,
        squash=guidance.squash, freeze_backbone=guidance.freeze_backbone,
        trainable_layers=guidance.trainable_layers,
    )  # fmt: skip
    trainer = GuidanceTrainer(model, tokenizer, settings)
    trainer.fit(lists[:n], None)
    return trainer


def untrained_pgg_trainer(config, task: TaskModel) -> PromptTrainer:
    """pgg's trainer around the untrained prompt policy of ``config`` (no reward model yet)."""
    sampling = config.sampling.prompt
    policy = build_prompt_policy(
        config.models.prompt.policy, sampling.prompt_length, config.policy.prompt.adaptor_hidden
    )
    return PromptTrainer(policy, task.model, config.prompt_train_config("pgg"))


def agreement(signal: torch.Tensor, truth: torch.Tensor, min_gap: float) -> tuple[int, int]:
    """Pairs within each batch row ordered like ``truth`` among those whose truth differs by > min_gap."""
    better = truth.unsqueeze(2) - truth.unsqueeze(1) > min_gap
    right = signal.unsqueeze(2) > signal.unsqueeze(1)
    return int((better & right).sum()), int(better.sum())


def run_task_model(task_model: str, seed: int) -> dict:
    config = config_for(DEFAULT_PARAMS, "sst-2", seed, task_model, "pgg", {"runtime.device": "cpu"})
    task = TaskModel(config, torch.device("cpu"))
    texts, labels = held_out_rows(config, seed)
    held_out = task.model.encode_inputs(texts)
    generator = seed_everything(config.runtime.seed * 1000)
    sampling, reward = config.sampling.prompt, config.reward.prompt
    trainer = untrained_pgg_trainer(config, task)
    started = time.perf_counter()
    fit_pool = scored_lists(trainer, task, max(FIT_LISTS), sampling.k, sampling.lists_per_step, generator)
    batch = sampling.lists_per_step * sampling.k
    signals: dict[str, list[torch.Tensor]] = {"subset": [], "full": [], "truth": [], "ids": []}
    train_inputs, train_labels = task.splits["train"]
    for _ in range(FRESH_BATCHES):
        ids, prompts = trainer.sample(batch, generator)
        probs = task.model.class_probs(prompts, train_inputs)
        gap = gap_on(probs, train_labels, reward)
        signals["subset"].append(gap(reward.reward_fraction, generator))
        signals["full"].append(gap(1.0, None))
        signals["truth"].append(100 * accuracy(task.model.class_probs(prompts, held_out), labels))
        signals["ids"].append(ids)
    scoring = time.perf_counter() - started
    stacked = {name: torch.stack(values) for name, values in signals.items() if name != "ids"}
    for n in FIT_LISTS:
        trainer.reward_model = fitted_guidance(config, fit_pool, n).model
        stacked[f"learned{n}"] = torch.stack([trainer.guidance_scores(ids) for ids in signals["ids"]])
    stacked["combined"] = torch.stack(
        [z_score(s) + z_score(g) for s, g in zip(stacked["subset"], stacked["learned128"], strict=True)]
    )
    result = {
        "task_model": task_model,
        "seed": seed,
        "scoring_s": round(scoring, 1),
        "load": os.getloadavg()[0],
    }
    for key in NAMES:
        for min_gap in MIN_GAPS:
            result[f"{key}@{min_gap:g}"] = agreement(stacked[key], stacked["truth"], min_gap)
    truth = stacked["truth"]
    result["truth_range"] = [
        round(truth.min().item(), 1),
        round(truth.median().item(), 1),
        round(truth.max().item(), 1),
    ]
    print(result, flush=True)
    return result


def gap_on(probs, labels, reward):
    """The gap reward of ``probs`` on an example subset of the given fraction (1.0: all rows)."""

    def on(fraction: float, generator):
        return gap_reward(probs, labels, reward.gap_positive, reward.gap_negative, fraction, generator)

    return on


def report(results: list[dict], threads: int) -> None:
    rows = []
    loads = [r["load"] for r in results if "load" in r] or [os.getloadavg()[0]]
    for task_model in dict.fromkeys(r["task_model"] for r in results):
        runs = sorted((r for r in results if r["task_model"] == task_model), key=lambda r: r["seed"])
        for key, label in NAMES.items():
            cells = []
            for min_gap in MIN_GAPS:
                shares = [100 * correct / pairs for correct, pairs in (r[f"{key}@{min_gap:g}"] for r in runs)]
                cells += [mean_sd(shares), " / ".join(f"{v:.1f}" for v in shares)]
            rows.append([task_model, label, *cells])
        low, high = min(r["truth_range"][0] for r in runs), max(r["truth_range"][2] for r in runs)
        seconds = statistics.mean(r["scoring_s"] for r in runs)
        rows.append([task_model, f"(held-out accuracy of the fresh prompts {low:.1f}-{high:.1f} %; "
                     f"sampling and scoring {seconds:.0f} s per seed)", "", "", "", ""])  # fmt: skip
    seeds = sorted({r["seed"] for r in results})
    table = markdown_table(
        ["task model", "signal", "pairs ordered right, % (mean ± sd)", "per seed", "same, held-out gap > 3 points",
         "per seed"], rows,
    )  # fmt: skip
    body = f"""SST-2, data seeds {", ".join(map(str, seeds))} (per-seed values in that order), `params.yaml` (prefix LM:
reward temperature 0.01). Per data seed, {FRESH_BATCHES} batches of 20 fresh prompts of the untrained policy, and
the fits' lists drawn before them. Truth: accuracy on the train and dev rows of the other four data seeds (about
250 distinct sentences; never the test split, never seen by a search). Share of the prompt pairs inside each
batch that a signal orders like the held-out accuracy; the second pair of columns keeps only pairs whose held-out
accuracies differ by more than 3 points (about one standard error of a 250-row accuracy). 50 is chance.

{table}

{threads} torch threads; load average {min(loads):.1f}-{max(loads):.1f}."""
    write_section(
        "prompt_signal", "Prompt training signals against accuracy on unseen examples (issue #14)", body
    )


def main_for(doc: str, default_out: Path, run_one, write_report, seeds=(13,)) -> None:
    """The command line of a per (task model, seed) bench: run what ``--out`` lacks, then report."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task-models", nargs="+", default=["prototype", "prefix_lm"])
    parser.add_argument("--out", type=Path, default=default_out,
                        help="one JSON line per (task model, seed); runs already there are reused")  # fmt: skip
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    for task_model in [] if args.report_only else args.task_models:
        for seed in args.seeds:
            if any(r["task_model"] == task_model and r["seed"] == seed for r in done):
                continue
            done.append(run_one(task_model, seed))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as out:
                out.write(json.dumps(done[-1]) + "\n")
    write_report(
        [r for r in done if r["task_model"] in args.task_models and r["seed"] in args.seeds],
        args.threads,
    )


if __name__ == "__main__":
    main_for(__doc__, Path("bench/results/prompt_signal.jsonl"), run_task_model, report)
