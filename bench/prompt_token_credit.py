"""Does the learned token reward point at the prompt tokens that matter? The cheapest credit diagnostic (#14)

    python -m bench.prompt_token_credit [--seeds 13 21 42 87 100] [--task-models prototype prefix_lm]

prompt_signal showed the learned reward orders whole prompts worse than the gap reward seqpg uses. The one
thing a token-level reward could still add is credit *inside* a prompt: which of its five words earned the
reward. That is what the paper's dense guidance promises, and it is what a variant using the true gap reward
with the guidance only spreading it over tokens would rest on. This measures it before any policy step.

Per data seed and task model, the default guidance (params.yaml: causal MiniLM, top 2 layers) is fitted on
the 128 warm-up lists of the untrained policy, as pgg's first refit is. Then for batches of 20 fresh prompts
of the same policy, every position t of every prompt is replaced in turn by one random word of the action
space (the same word at every position of a prompt), and the drop of each score is measured:

    value_{i,t} = score(prompt_i) - score(prompt_i with word t replaced)

on the held-out rows of prompt_signal (train and dev rows of the other four data seeds, never test) and on
the 32 train rows. A credit is right where it is high on the words whose loss hurts. Compared, per batch of
20 prompts x 5 words, as the REINFORCE update would weight them:

- pgg: r_t z-scored over the batch per position (its update's weights);
- seqpg: the prompt's gap reward on one 80 % subset of the train rows, z-scored, on every word;
- seqpg's gap reward plus pgg's within-prompt deviation z(r)_{i,t} - mean_t z(r)_{i,t}: the true reward, spread
  over the words by the guidance (the variant this would justify);
- the within-prompt part alone: does the word with the highest credit matter more than the one with the
  lowest? (50 % is chance; prompts whose two drops tie are left out.)

Writes the ``prompt_token_credit`` section of BENCHMARKS.md. No setting is chosen from it.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

from bench.prompt_guidance_fresh import scored_lists
from bench.prompt_signal import fitted_guidance, gap_on, held_out_rows, main_for, untrained_pgg_trainer
from bench.prompt_surrogate import TaskModel, config_for, seed_everything
from bench.report import markdown_table, mean_sd, write_section
from components.gap_reward import accuracy
from components.prompt_trainer import gap_spread_weights, z_score
from flows.config import DEFAULT_PARAMS

SEEDS = (13, 21, 42, 87, 100)
WARMUP_LISTS = 128
BATCHES = 10
CREDITS = {
    "pgg": "pgg: r_t, z-scored per position (its update's weights)",
    "seqpg": "seqpg: the prompt's subset gap reward on every word",
    "gap_spread": "seqpg's gap reward + pgg's within-prompt deviation",
}
TRUTHS = {"held_acc": "held-out accuracy", "held_gap": "held-out gap reward", "train_gap": "train gap reward"}


def edited(ids: torch.Tensor, replacements: torch.Tensor) -> torch.Tensor:
    """``[n, L, L]``: prompt i with word t replaced by ``replacements[i]``, for every t."""
    n, length = ids.shape
    copies = ids[:, None, :].repeat(1, length, 1)
    positions = torch.arange(length)
    copies[:, positions, positions] = replacements[:, None]
    return copies


def correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two equally shaped tensors, flattened."""
    x, y = x.flatten() - x.mean(), y.flatten() - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp(min=1e-12))


def run_task_model(task_model: str, seed: int) -> dict:
    config = config_for(DEFAULT_PARAMS, "sst-2", seed, task_model, "pgg", {"runtime.device": "cpu"})
    task = TaskModel(config, torch.device("cpu"))
    texts, labels = held_out_rows(config, seed)
    held_out = task.model.encode_inputs(texts)
    train_inputs, train_labels = task.splits["train"]
    generator = seed_everything(config.runtime.seed * 1000)
    sampling, reward = config.sampling.prompt, config.reward.prompt
    trainer = untrained_pgg_trainer(config, task)
    policy = trainer.policy
    started = time.perf_counter()
    warmup = scored_lists(trainer, task, WARMUP_LISTS, sampling.k, sampling.lists_per_step, generator)
    trainer.reward_model = fitted_guidance(config, warmup, WARMUP_LISTS).model

    batch, length = sampling.lists_per_step * sampling.k, sampling.prompt_length
    cells = {key: [] for key in ("pgg", "seqpg", "gap_spread", *TRUTHS)}
    top_vs_bottom = {truth: [0, 0] for truth in TRUTHS}  # prompts where top-credit word's drop is larger, all
    for _ in range(BATCHES):
        ids, _ = trainer.sample(batch, generator)
        picks = torch.randint(len(policy.allowed_ids), (batch,), generator=generator)
        replacements = policy.allowed_ids.cpu()[picks]
        variants = torch.cat([ids[:, None, :], edited(ids, replacements)], dim=1)  # [n, 1 + L, L]
        prompts = policy.decode(variants.view(-1, length))
        held_probs = task.model.class_probs(prompts, held_out)
        train_probs = task.model.class_probs(prompts, train_inputs)
        scores = {
            "held_acc": 100 * accuracy(held_probs, labels),
            "held_gap": gap_on(held_probs, labels, reward)(1.0, None),
            "train_gap": gap_on(train_probs, train_labels, reward)(1.0, None),
        }
        for truth, values in scores.items():
            values = values.view(batch, 1 + length)
            cells[truth].append(values[:, :1] - values[:, 1:])  # the drop when word t is lost
        # The credits, from what each method sees of the original prompts only.
        with torch.no_grad():
            token_rewards = trainer.reward_model(ids, torch.ones_like(ids))
        pgg = trainer._weights(token_rewards)  # the default token credit: z-scored r_t
        original_probs = train_probs.view(batch, 1 + length, *train_probs.shape[1:])[:, 0]
        subset_reward = gap_on(original_probs, train_labels, reward)(reward.reward_fraction, generator)
        cells["pgg"].append(pgg)
        cells["seqpg"].append(z_score(subset_reward)[:, None].expand(batch, length))
        cells["gap_spread"].append(gap_spread_weights(token_rewards, subset_reward))
        top, bottom = pgg.argmax(1), pgg.argmin(1)
        rows = torch.arange(batch)
        for truth in TRUTHS:
            drops = cells[truth][-1]
            top_drop, bottom_drop = drops[rows, top], drops[rows, bottom]
            top_vs_bottom[truth][0] += int((top_drop > bottom_drop).sum())
            top_vs_bottom[truth][1] += int((top_drop != bottom_drop).sum())
    result = {
        "task_model": task_model,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "load": os.getloadavg()[0],
    }
    for truth in TRUTHS:
        drops = cells[truth]
        for credit in CREDITS:
            result[f"{credit}~{truth}"] = statistics.mean(
                correlation(c, d) for c, d in zip(cells[credit], drops, strict=True)
            )
        result[f"top_vs_bottom~{truth}"] = top_vs_bottom[truth]
        stacked = torch.cat(drops)
        result[f"drop~{truth}"] = float(stacked.mean())
        # How much the words of one prompt differ at all: the room a within-prompt credit has.
        result[f"spread~{truth}"] = float((stacked.max(1).values - stacked.min(1).values).mean())
    print(result, flush=True)
    return result


def report(results: list[dict], threads: int) -> None:
    rows = []
    loads = [r["load"] for r in results]
    for task_model in dict.fromkeys(r["task_model"] for r in results):
        runs = sorted((r for r in results if r["task_model"] == task_model), key=lambda r: r["seed"])
        for credit, label in CREDITS.items():
            rows.append([task_model, label, *(_cells([r[f"{credit}~{t}"] for r in runs], 3) for t in TRUTHS)])
        shares = {
            t: [100 * r[f"top_vs_bottom~{t}"][0] / max(r[f"top_vs_bottom~{t}"][1], 1) for r in runs]
            for t in TRUTHS
        }
        rows.append([task_model, "pgg's top-credit word hurts more when lost than its bottom-credit word, %",
                     *(_cells(shares[t], 1) for t in TRUTHS)])  # fmt: skip
        rows.append([task_model, "mean drop when one word is lost / mean max - min over a prompt's words",
                     *(f"{statistics.mean(r[f'drop~{t}'] for r in runs):.2f} / "
                       f"{statistics.mean(r[f'spread~{t}'] for r in runs):.2f}" for t in TRUTHS)])  # fmt: skip
    seeds = sorted({r["seed"] for r in results})
    seconds = {t: statistics.mean(r["seconds"] for r in results if r["task_model"] == t) for t in
               dict.fromkeys(r["task_model"] for r in results)}  # fmt: skip
    table = markdown_table(
        ["task model", "credit", *(f"against the drop in {name} (mean ± sd; per seed)" for name in TRUTHS.values())],
        rows,
    )  # fmt: skip
    body = f"""SST-2, data seeds {", ".join(map(str, seeds))} (per-seed values in that order), `params.yaml` (prefix LM:
reward temperature 0.01). The default guidance is fitted on the {WARMUP_LISTS} warm-up lists of the untrained policy.
Then {BATCHES} batches of 20 fresh prompts of that policy; in each prompt every word is replaced in turn by one
random word of the action space, and the drop of the held-out accuracy (train and dev rows of the other four
data seeds, about 250 sentences, never test), the held-out gap reward and the gap reward on the 32 train rows is
measured. Correlation, per batch of 20 prompts x 5 words, between a credit (the REINFORCE weight of a word) and
that drop: how well the weights point at the words whose loss hurts. The within-prompt row counts prompts whose
two drops differ; 50 is chance.

{table}

Seconds per seed (sampling, fit, scoring): {", ".join(f"{t} {s:.0f}" for t, s in seconds.items())};
{threads} torch threads; load average {min(loads):.1f}-{max(loads):.1f}."""
    write_section(
        "prompt_token_credit",
        "Prompt token credit: does the learned reward point at the words that matter? (issue #14)",
        body,
    )


def _cells(values: list[float], digits: int) -> str:
    return f"{mean_sd(values, digits)}; " + " / ".join(f"{v:.{digits}f}" for v in values)


if __name__ == "__main__":
    main_for(__doc__, Path("bench/results/prompt_token_credit.jsonl"), run_task_model, report, SEEDS)
