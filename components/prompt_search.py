"""The plain prompt search: one block of policy steps, the refit schedule, and both selections.

Algorithm 1 of the paper for prompts, without Prefect, MLflow or files: flows.prompt runs the blocks as
tasks, checkpoints and resumes them, and logs what these functions return (plain records and rows);
every entry point (the pipeline, bench/) goes through flows.prompt, so the search exists once.
A block, step by step: 1. sample prompts from the policy, 2. score them with the task model (the gap
reward: task-model queries), 3. update the policy by REINFORCE (pgg: on the token guidance's r_t, then
``guidance_updates`` surrogate updates on fresh prompts scored by the guidance alone; with
``pgg_update: learned``, the authors' protocol, only on fresh prompts scored by the guidance).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import torch

from components.gap_reward import ScoredPrompts, accuracy, rank_by_reward, select_prompt
from components.preferences import RankedList
from components.prompt_trainer import PromptTrainer
from components.task_models import EncodedInputs


def refit_due(method: str, iteration: int, fitted: bool, first_step: int, refit_until: int) -> bool:
    """pgg refits before its first block of updates and before every block that starts before refit_until."""
    return method == "pgg" and iteration > 0 and (not fitted or first_step < refit_until)


def guidance_window(history: list, window_blocks: int | None) -> list:
    """The blocks a refit learns from: the last window_blocks of ``history`` (None: all of them)."""
    return history if window_blocks is None else history[-window_blocks:]


def ranked_lists(records: list[dict]) -> list[RankedList]:
    """The sampled lists of K prompts of one block's records, as the guidance's training data."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["list"]].append(record)
    return [
        RankedList(None, [r["prompt"] for r in group], [r["reward"] for r in group])
        for _, group in sorted(groups.items())
    ]


def scored_batches(records: list[dict]) -> list[tuple[list[str], list[float]]]:
    """(prompts, rewards) of each scored batch of one block (its prompts share one example subset)."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["batch"]].append(record)
    return [
        ([r["prompt"] for r in group], [r["reward"] for r in group]) for _, group in sorted(groups.items())
    ]


def run_block(
    trainer: PromptTrainer,
    method: str,
    iteration: int,
    steps: list[tuple[int, int]],
    generator: torch.Generator,
    splits: dict[str, tuple[EncodedInputs, torch.Tensor]],
    history: list[dict],
    k: int,
    log_every: int,
    on_step: Callable[[int, float | None], None] | None = None,
) -> dict:
    """One block: for each (step, n) of ``steps`` sample n prompts, score them and (iteration > 0, not
    random search) update the policy. ``history``: the records of earlier blocks (the best prompt so far
    is logged). Returns the block's records (every scored prompt: step, batch, list, prompt, reward,
    train_accuracy), its log rows (one per log_every steps and one at the block's end) and the loss of
    every real policy update. ``on_step(done, loss)`` after each step: progress only, it changes nothing."""
    train, labels = splits["train"]
    dev, dev_labels = splits["dev"]
    scored = ScoredPrompts()  # every prompt so far, earlier blocks too: the best one is logged
    for record in history:
        scored.add(record["prompt"], record["reward"], record["train_accuracy"])
    dev_accuracy: dict[str, float] = {}
    records, rows, window, step_losses = [], [], defaultdict(list), []
    started = time.perf_counter()
    for position, (step, n) in enumerate(steps):
        ids, texts = trainer.sample(n, generator)  # 1. prompts from the policy (random: uniform)
        rewards, train_accuracy = trainer.score(texts, train, labels, generator)  # 2. gap reward: queries
        for text, reward, acc in zip(texts, rewards.tolist(), train_accuracy.tolist(), strict=True):
            records.append({"step": step, "batch": position, "list": len(records) // k, "prompt": text,
                            "reward": reward, "train_accuracy": 100 * acc})  # fmt: skip
            scored.add(text, reward, 100 * acc)
        window["reward"] += rewards.tolist()
        if iteration > 0 and method != "random":  # 3. REINFORCE: r_t of the guidance (pgg) or gap reward
            learned_only = method == "pgg" and trainer.config.pgg_update == "learned"  # the authors' pgg
            stats = (
                trainer.learned_update(ids, rewards, generator)
                if learned_only
                else trainer.update(ids, rewards)
            )
            for key, value in stats.items():
                window[key].append(value)
            step_losses.append(window["loss"][-1])
            for _ in range(trainer.config.guidance_updates if method == "pgg" else 0):  # the surrogate
                for key, value in trainer.guidance_update(trainer.config.guidance_samples, generator).items():
                    window[key].append(value)
        if position == len(steps) - 1 or (step > 0 and step % log_every == 0):
            best = scored.best()
            if best not in dev_accuracy:
                dev_accuracy[best] = (
                    100 * accuracy(trainer.task_model.class_probs([best], dev), dev_labels).item()
                )
            rows.append(
                log_row(step, len(scored), window, scored, best, dev_accuracy[best], started, position)
            )
            window = defaultdict(list)
        if on_step is not None:
            on_step(position + 1, step_losses[-1] if step_losses else None)
    return {"records": records, "rows": rows, "step_losses": step_losses}


def log_row(step, evaluations, window, scored, best, dev_accuracy, started, position) -> dict:
    """One log point: this window's rewards and updates, and the best prompt so far."""
    row = {
        "step": step,
        "evaluations": evaluations,
        "reward/mean": sum(window["reward"]) / len(window["reward"]),
        "reward/max": max(window["reward"]),
        "best/train_reward": scored.mean_reward(best),
        "best/train_accuracy": scored.train_accuracy[best],
        "best/dev_accuracy": dev_accuracy,
        "seconds/step": (time.perf_counter() - started) / (position + 1),
        "best_prompt": best,
    }
    if window["entropy"]:
        row["policy/entropy"] = sum(window["entropy"]) / len(window["entropy"])
        row["policy/loss"] = sum(window["loss"]) / len(window["loss"])
    if window["surrogate_loss"]:
        row["policy/surrogate_loss"] = sum(window["surrogate_loss"]) / len(window["surrogate_loss"])
        row["policy/surrogate_updates"] = len(window["surrogate_loss"])
    if sum(window["guidance_pairs"]):
        row["guidance/online_accuracy"] = sum(window["guidance_correct"]) / sum(window["guidance_pairs"])
    return row


def rank_policy_prompts(
    trainer: PromptTrainer, method: str, samples: int, seed: int, train: EncodedInputs, labels: torch.Tensor
) -> tuple[list[str], list[float], int]:
    """The policy's greedy prompt and ``samples`` of its samples (random search: uniform prompts), ranked
    best first by the learned reward (pgg) or the training gap reward; returns (prompts, scores,
    task-model queries spent ranking them). Its own generator: training draws are untouched."""
    generator = torch.Generator().manual_seed(seed)
    ids, texts = trainer.sample(samples, generator)
    if method != "random":
        greedy_ids, greedy_text = trainer.policy.greedy()
        ids, texts = torch.cat([greedy_ids, ids]), greedy_text + texts
    first = {text: i for i, text in reversed(list(enumerate(texts)))}  # one row per distinct prompt
    rows = sorted(first.values())
    ids, texts = ids[rows], [texts[i] for i in rows]
    if method == "pgg":
        scores, queries = trainer.guidance_scores(ids).tolist(), 0
    else:
        scores, queries = trainer.score(texts, train, labels, generator)[0].tolist(), len(texts)
    ranked = sorted(zip(texts, scores, strict=True), key=lambda pair: -pair[1])
    return [t for t, _ in ranked], [s for _, s in ranked], queries


def authors_pick(
    trainer: PromptTrainer, samples: int, seed: int, train: EncodedInputs, labels: torch.Tensor
) -> dict:
    """The authors' (RLPrompt's) final prompt: ``samples`` prompts of the trained policy scored by the gap
    reward on the training split, the highest wins, no dev pick. Its own generator: training draws are
    untouched. Returns the prompt, its reward and the queries spent."""
    generator = torch.Generator().manual_seed(seed)
    _, texts = trainer.sample(samples, generator)
    rewards = trainer.score(texts, train, labels, generator)[0].tolist()
    best = max(range(len(texts)), key=lambda i: rewards[i])
    return {"prompt": texts[best], "reward": rewards[best], "queries": len(texts)}


def selections(
    records: list[dict],
    policy: dict,
    candidates: int,
    top: int,
    accuracies: Callable[[list[str]], dict[str, list[float]]],
    authors: dict | None = None,
    guidance_queries: int = 0,
) -> tuple[dict[str, float], dict]:
    """The selections at one budget: *best scored* (the top ``candidates`` of ``records`` by training
    reward, picked on dev), *policy* (a block's ranked policy prompts, picked on dev) and, given
    ``authors`` (``authors_pick``), the authors' prompt. ``accuracies``: dev and test accuracy (%) of each
    prompt; ``guidance_queries``: fresh prompts scored for the guidance, counted in ``evaluations``.
    Returns the metrics and the selected prompts with the best-scored candidate table."""
    ranked = rank_by_reward([r["prompt"] for r in records], [r["reward"] for r in records])[:candidates]
    best_scored = [p for p, _ in ranked]
    policy_prompts = policy["prompts"][:candidates]
    scores = accuracies(best_scored + policy_prompts)
    dev, test, n = scores["dev"], scores["test"], len(best_scored)
    best = select_prompt(best_scored, dev[:n], test[:n], top=top)
    mine = select_prompt(policy_prompts, dev[n:], test[n:], top=top)
    metrics = {
        "test_accuracy": best.test_accuracy, "top_test_accuracy": best.top_test_accuracy,
        "dev_accuracy": best.dev_accuracy, "evaluations": len(records) + guidance_queries,
        "policy_test_accuracy": mine.test_accuracy, "policy_top_test_accuracy": mine.top_test_accuracy,
        "policy_dev_accuracy": mine.dev_accuracy, "policy_selection_evaluations": policy["queries"],
    }  # fmt: skip
    if authors:  # scored on its own: the other prompts' batches stay as they were
        theirs = accuracies([authors["prompt"]])
        metrics |= {"authors_test_accuracy": theirs["test"][0], "authors_dev_accuracy": theirs["dev"][0],
                    "authors_selection_evaluations": authors["queries"]}  # fmt: skip
    train_accuracy = {r["prompt"]: r["train_accuracy"] for r in records}
    table = {
        "prompt": best_scored,
        "train_reward": [reward for _, reward in ranked],
        "train_accuracy": [train_accuracy[p] for p in best_scored],
        "dev_accuracy": dev[:n],
        "test_accuracy": test[:n],
        "selected": [p == best.prompt for p in best_scored],
    }
    chosen = {"prompt": best.prompt, "policy_prompt": mine.prompt, "table": table}
    return metrics, chosen | ({"authors_prompt": authors["prompt"]} if authors else {})


USES = ("training", "guidance", "logging", "selection")


def queries_by_use(method: str, learned_only: bool, blocks: list[dict], window_blocks: int | None) -> dict:
    """A finished search's task-model queries by what they were for, each counted once, under its first
    use in the order of USES. ``blocks`` (0: the warm-up): ``scored`` (prompts the block scored),
    ``fitted`` (a guidance fit before the block), ``fresh`` (fresh prompts scored for that fit) and
    ``selection`` (queries ranking the block's policy prompts and the authors' pick; the last block's
    are the final selection, earlier ones only draw the query curve). training: scores that weighted an
    update (seqpg, pgg scored); guidance: a fit's data; logging: scores only logged and searched for the
    best-scored prompt (pgg learned, the authors'); selection: random search's scores, seqpg's warm-up and
    the final selection."""
    uses = dict.fromkeys(USES, 0)
    fits = [j for j, block in enumerate(blocks) if block["fitted"]]
    for i, block in enumerate(blocks):
        feeds_fit = any(i < j and (window_blocks is None or i >= j - window_blocks) for j in fits)
        if method == "random" or (i == 0 and not feeds_fit):
            use = "selection"
        elif i > 0 and not (method == "pgg" and learned_only):
            use = "training"
        else:
            use = "guidance" if feeds_fit else "logging"
        uses[use] += block["scored"]
        uses["guidance"] += block["fresh"]
    uses["selection"] += blocks[-1]["selection"]
    return uses
