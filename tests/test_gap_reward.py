import pytest
import torch

from components.gap_reward import (
    accuracy,
    example_gaps,
    gap_reward,
    rank_by_reward,
    sample_example_subset,
    select_prompt,
)

# Two prompts, two examples, three classes.
PROBS = torch.tensor(
    [
        [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]],  # gaps: 0.7-0.2=0.5, 0.3-0.5=-0.2
        [[0.1, 0.6, 0.3], [0.1, 0.1, 0.8]],  # gaps: 0.1-0.6=-0.5, 0.8-0.1=0.7
    ]
)
LABELS = torch.tensor([0, 2])


def test_gap_reward_matches_hand_computed_example():
    assert torch.allclose(example_gaps(PROBS, LABELS), torch.tensor([[0.5, -0.2], [-0.5, 0.7]]))
    rewards = gap_reward(PROBS, LABELS, example_fraction=1.0)
    # prompt 0: (200*0.5 + 180*-0.2)/2 = (100 - 36)/2 = 32; prompt 1: (-90 + 140)/2 = 25
    assert torch.allclose(rewards, torch.tensor([32.0, 25.0]))
    custom = gap_reward(PROBS, LABELS, positive_coef=1.0, negative_coef=2.0, example_fraction=1.0)
    assert torch.allclose(custom, torch.tensor([(0.5 - 0.4) / 2, (-1.0 + 0.7) / 2]))


def test_gap_reward_uses_the_same_random_subset_for_every_prompt():
    probs = torch.softmax(torch.randn(3, 10, 2, generator=torch.Generator().manual_seed(0)), -1)
    labels = torch.randint(2, (10,), generator=torch.Generator().manual_seed(1))
    subset = sample_example_subset(10, 0.8, torch.Generator().manual_seed(5))
    assert len(subset) == 8 and len(set(subset.tolist())) == 8
    rewards = gap_reward(probs, labels, example_fraction=0.8, generator=torch.Generator().manual_seed(5))
    expected = gap_reward(probs[:, subset], labels[subset], example_fraction=1.0)
    assert torch.allclose(rewards, expected)
    other = gap_reward(probs, labels, example_fraction=0.8, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(rewards, other)  # redrawn subset changes the reward


def test_accuracy_and_bad_labels():
    assert torch.allclose(accuracy(PROBS, LABELS), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="labels must lie"):
        gap_reward(PROBS, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="disagree"):
        accuracy(PROBS, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="fraction"):
        gap_reward(PROBS, LABELS, example_fraction=0.0)


def test_rank_and_select_prompts():
    ranked = rank_by_reward(["a b", "c d", "a b", "e f"], [1.0, 5.0, 3.0, -1.0])
    assert ranked == [("c d", 5.0), ("a b", 2.0), ("e f", -1.0)]
    selection = select_prompt(["p1", "p2", "p3", "p4"], [0.6, 0.9, 0.8, 0.7], [0.50, 0.70, 0.90, 0.10])
    assert selection.prompt == "p2" and selection.dev_accuracy == 0.9 and selection.test_accuracy == 0.7
    assert selection.top_test_accuracy == pytest.approx((0.7 + 0.9 + 0.1) / 3) and selection.top == 3
    with pytest.raises(ValueError, match="matching"):
        select_prompt(["p1"], [0.5, 0.6], [0.5])
