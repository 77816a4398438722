"""How good a prompt is: RLPrompt's gap reward, accuracy, and picking the final prompt.

Gap reward (RLPrompt, Deng et al. 2022): per example, gap = p(correct) - max p(other class);
reward = positive_coef * gap if gap > 0 else negative_coef * gap. A prompt's reward is the mean
over a random ``example_fraction`` of the training examples, redrawn each call (each step).

Selection (pure functions): rank candidates by training reward, keep the best on dev accuracy,
report the test accuracy of that prompt and the mean test accuracy of the top 3 on dev.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _check(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.dim() < 2 or probs.shape[-2] != labels.shape[-1]:
        raise ValueError(
            f"probs {tuple(probs.shape)} and labels {tuple(labels.shape)} disagree; "
            "expected probs [..., N, C] and labels [N]"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= probs.shape[-1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[-1]}); got {labels.min()}..{labels.max()}")


def example_gaps(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """p(correct) - max p(other) for probs [..., N, C] and labels [N]; returns [..., N]."""
    _check(probs, labels)
    index = labels.expand(probs.shape[:-1]).unsqueeze(-1)
    correct = probs.gather(-1, index).squeeze(-1)
    others = probs.scatter(-1, index, float("-inf"))
    return correct - others.max(-1).values


def sample_example_subset(
    n_examples: int, fraction: float = 0.8, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of a random ``fraction`` of ``n_examples`` (at least one), sorted."""
    if not 0 < fraction <= 1:
        raise ValueError(f"example fraction must be in (0, 1], got {fraction}")
    k = max(1, round(fraction * n_examples))
    return torch.randperm(n_examples, generator=generator)[:k].sort().values


def gap_reward(
    probs: torch.Tensor,
    labels: torch.Tensor,
    positive_coef: float = 200.0,
    negative_coef: float = 180.0,
    example_fraction: float = 0.8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reward of each prompt, [P], from probs [P, N, C]; one example subset shared by all prompts."""
    gaps = example_gaps(probs, labels)
    gaps = gaps[..., sample_example_subset(labels.shape[-1], example_fraction, generator)]
    rewards = torch.where(gaps > 0, positive_coef * gaps, negative_coef * gaps)
    return rewards.mean(-1)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy of each prompt, [...], from probs [..., N, C]."""
    _check(probs, labels)
    return (probs.argmax(-1) == labels).float().mean(-1)


def rank_by_reward(prompts: list[str], rewards: list[float]) -> list[tuple[str, float]]:
    """Unique prompts with their mean training reward, best first (ties keep first-seen order)."""
    if len(prompts) != len(rewards):
        raise ValueError(f"got {len(prompts)} prompts but {len(rewards)} rewards; pass one reward per prompt")
    totals: dict[str, list[float]] = {}
    for prompt, reward in zip(prompts, rewards, strict=True):
        totals.setdefault(prompt, []).append(float(reward))
    means = [(p, sum(r) / len(r)) for p, r in totals.items()]
    return sorted(means, key=lambda pr: -pr[1])


@dataclass(frozen=True)
class PromptSelection:
    prompt: str
    dev_accuracy: float
    test_accuracy: float
    top_test_accuracy: float  # mean test accuracy of the ``top`` best prompts on dev
    top: int


def select_prompt(
    candidates: list[str], dev_accuracies: list[float], test_accuracies: list[float], top: int = 3
) -> PromptSelection:
    """Pick the candidate with the best dev accuracy (first wins ties) and report its test accuracy."""
    if not candidates or not len(candidates) == len(dev_accuracies) == len(test_accuracies):
        raise ValueError(
            f"need matching non-empty lists: {len(candidates)} candidates, {len(dev_accuracies)} dev "
            f"and {len(test_accuracies)} test accuracies"
        )
    order = sorted(range(len(candidates)), key=lambda i: -dev_accuracies[i])
    best = order[0]
    top_test = [float(test_accuracies[i]) for i in order[:top]]
    return PromptSelection(
        prompt=candidates[best],
        dev_accuracy=float(dev_accuracies[best]),
        test_accuracy=float(test_accuracies[best]),
        top_test_accuracy=sum(top_test) / len(top_test),
        top=len(top_test),
    )


class ScoredPrompts:
    """Every prompt a search has scored: its training rewards (a prompt may be drawn again) and last
    training accuracy. ``best()`` is the prompt with the highest mean reward (first seen wins ties)."""

    def __init__(self) -> None:
        self.rewards: dict[str, list[float]] = {}
        self.train_accuracy: dict[str, float] = {}

    def add(self, prompt: str, reward: float, train_accuracy: float) -> None:
        self.rewards.setdefault(prompt, []).append(float(reward))
        self.train_accuracy[prompt] = float(train_accuracy)

    def mean_reward(self, prompt: str) -> float:
        return sum(self.rewards[prompt]) / len(self.rewards[prompt])

    def best(self) -> str:
        if not self.rewards:
            raise ValueError("no prompt has been scored yet")
        return max(self.rewards, key=self.mean_reward)

    def __len__(self) -> int:
        """How many scores were recorded: the task-model queries spent."""
        return sum(len(r) for r in self.rewards.values())
